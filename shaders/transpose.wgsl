// transpose: y[c, r] = x[r, c], f32: the layout change between code2wav's transformer and ConvNeXt
// blocks, which work on [T, C], and its convolutions, which work on channels-first [C, T].
//
// Bindings: 0 params; 1 x: f32 window of rows [r0, r1) of x [R, C]; 2 y: f32 window of rows [c0, c1) of y [C, R].
//   A window starts at an aligned offset at or before its first row; x_off and y_off are the indices of
//   x[r0, 0] and y[c0, 0] within their windows (ops/pieces.py).
// Params (sizes in elements): r, c = R, C; r0, r1, c0, c1: the block of x this dispatch moves;
//   x_off, y_off; tiles_c = ceil((c1 - c0) / TILE).
// Dispatch: one workgroup of TILE x TILE threads per TILE x TILE tile of the block, flat tile index
//   wid.x + wid.y * nwg.x (groups_for) = tile_row * tiles_c + tile_col. A tile is read along x's rows and
//   written along y's rows through workgroup memory (rows padded by one against bank conflicts), so
//   both sides are coalesced.

override TILE: u32 = 16;

struct Params { r: u32, c: u32, r0: u32, r1: u32, c0: u32, c1: u32, x_off: u32, y_off: u32, tiles_c: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

var<workgroup> tile: array<f32, TILE * (TILE + 1u)>;

// #include "lib/grid.wgsl"

@compute @workgroup_size(TILE, TILE)
fn main(grid: Grid, @builtin(local_invocation_id) lid: vec3<u32>) {
    let flat = group_index(grid);
    let tr = flat / p.tiles_c;
    let tc = flat % p.tiles_c;
    let rr = p.r0 + tr * TILE;   // first x row of the tile
    let cc = p.c0 + tc * TILE;   // first x column of the tile
    if (rr >= p.r1) { return; }  // uniform per workgroup: the barrier below stays uniform
    let r_in = rr + lid.y;
    let c_in = cc + lid.x;
    if (r_in < p.r1 && c_in < p.c1) {
        tile[lid.y * (TILE + 1u) + lid.x] = x[p.x_off + (r_in - p.r0) * p.c + c_in];
    }
    workgroupBarrier();
    let c_out = cc + lid.y;      // y row
    let r_out = rr + lid.x;      // y column
    if (c_out < p.c1 && r_out < p.r1) {
        y[p.y_off + (c_out - p.c0) * p.r + r_out] = tile[lid.x * (TILE + 1u) + lid.y];
    }
}
