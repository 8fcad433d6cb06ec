// split_sum: the tiled matmul's split-K partial sums added up (ops/tiles.py): where a matmul has too few
// tiles to reach every compute unit, its K range is split over `splits` workgroups a tile, each writing its
// partial sums to its own plane of `part`, and this pass adds the planes in order into out.
//   out[p * ldo + col_base + f] = sum over s < splits of part[s * plane + p * n + f]
//   Bindings: 0 params; 1 part: [splits, P, n] f32; 2 out: [P, ldo] f32.
//   Params:   total = P * n, n, splits, plane (= P * n, elements between planes), ldo, col_base.
//   Dispatch: one thread per output, workgroups of WG, flat index (groups_for).

override WG: u32 = 256;

struct Params { total: u32, n: u32, splits: u32, plane: u32, ldo: u32, col_base: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

// #include "lib/grid.wgsl"

@compute @workgroup_size(WG)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = group_index(grid) * WG + lid;
    if (i >= p.total) { return; }
    var acc = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        acc += part[s * p.plane + i];
    }
    out[(i / p.n) * p.ldo + p.col_base + i % p.n] = acc;
}
