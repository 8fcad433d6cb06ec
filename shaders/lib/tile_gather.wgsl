// The prefill's one matmul, its contract and the parts its two inner loops share: the row gather, the tile's
// matrix, the rows a thread stages and the store. out[p, col_base + f] = W[e, f] . x[p / x_div] for the
// rows p listed in tiles of TM, each tile with one weight matrix e. The MoE experts list the (token, slot)
// pairs grouped by expert (moe.wgsl's `group`), so that an expert's weights are read once per tile of pairs
// instead of once per pair; a dense linear lists the rows 0 .. M-1 in order, all with matrix 0
// (ops/linear.py). Included by lib/tiles.wgsl (f32 x: tiles.wgsl with f32/f16/bf16 weights, tiles_q8.wgsl
// with Q8_0 weights widened into the tile) and by tiles_dot4.wgsl (Q8_0 weights, int8 x, dot4I8Packed),
// which bind x at binding 1 (and tiles_dot4 its scales at 7) and the weights from binding 5 on.
//
//   GATE_UP = true:  out[p, f] = silu(W[e, f] . x[p / x_div]) * (W[e, N + f] . x[p / x_div])  (SwiGLU of
//                    an expert's fused gate_up rows)
//   GATE_UP = false: out[p, col_base + f] = W[e, f] . x[p / x_div]
//   Bindings: 0 params; 2 order: [tiles * TM] u32 (row ids, NO_PAIR for padding); 3 tile_expert: [tiles] i32
//             (each tile's matrix, -1 for none); 4 out: [P, ldo] f32.
//   Params:   pairs = P, n = N (outputs of this piece), kdim, x_div, e_base, e_count (the bound piece's
//             matrices: tiles of others return at once, so one dispatch per piece writes each row once),
//             ldo = out's row stride, col_base = this piece's first output column; split, plane: split-K
//             (lib/tiles.wgsl only, GATE_UP false), workgroup z sums the quads [z split, (z + 1) split) of
//             K into out from z plane on (partial sums that split_sum.wgsl adds up); one split: z = 0.
//   Dispatch: (ceil(N / TN), tiles, splits) workgroups of 16 x 16 threads; each thread computes a 4 x 4
//             block (4 rows x 4 outputs), twice over (gate and up) with GATE_UP.

const TM: u32 = 64u;            // rows per tile (ops/tiles.py TILE_ROWS)
const TN: u32 = 64u;            // outputs per tile
const NO_PAIR: u32 = 0xffffffffu;
override GATE_UP: bool = true;

struct TileParams { pairs: u32, n: u32, kdim: u32, x_div: u32, e_base: u32, e_count: u32, ldo: u32, col_base: u32,
                   split: u32, plane: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<uniform> tp: TileParams;
@group(0) @binding(2) var<storage, read> order: array<u32>;
@group(0) @binding(3) var<storage, read> tile_expert: array<i32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// #include "lib/silu.wgsl"

// A workgroup's tile: whether its matrix is in the bound piece (the same for the whole workgroup, which
// returns at once if not), that matrix within the piece, its first output, its first slot of `order`, and
// where in out its plane starts (split-K).
struct Tile { ok: bool, e: u32, n0: u32, slot0: u32, o0: u32 }

fn tile_at(wid: vec3<u32>) -> Tile {
    let e = tile_expert[wid.y] - i32(tp.e_base);
    return Tile(e >= 0 && u32(e) < tp.e_count, u32(max(e, 0)), wid.x * TN, wid.y * TM, wid.z * tp.plane);
}

// The rows a thread stages, r of the tile: x row x (the pair's, p / x_div; has_x false for padding) and
// weight row w of the bound piece (the gate or down row of output n0 + r; its up row is w + n).
struct Rows { x: u32, has_x: bool, w: u32, has_w: bool }

fn staged_rows(t: Tile, r: u32) -> Rows {
    let pair = order[t.slot0 + r];
    return Rows(select(0u, pair / tp.x_div, pair != NO_PAIR), pair != NO_PAIR,
                t.e * select(1u, 2u, GATE_UP) * tp.n + t.n0 + r, t.n0 + r < tp.n);
}

// A thread's 4 x 4 block (twice with GATE_UP): g_i, u_i are pair 4 * lid.y + i of the tile, outputs
// 4 * lid.x .. + 3, gate (or down) and up.
struct Acc { g0: vec4<f32>, g1: vec4<f32>, g2: vec4<f32>, g3: vec4<f32>,
             u0: vec4<f32>, u1: vec4<f32>, u2: vec4<f32>, u3: vec4<f32> }

fn zero_acc() -> Acc {
    let z = vec4<f32>(0.0);
    return Acc(z, z, z, z, z, z, z, z);
}

// One output row (pair) of a thread: four outputs from n on, gate (or down) values g, up values u, in the
// plane from o0 on.
fn store_row(o0: u32, pair: u32, n: u32, g: vec4<f32>, u: vec4<f32>) {
    if (pair == NO_PAIR) { return; }
    var v = g;
    if (GATE_UP) { v = vec4<f32>(silu(g.x) * u.x, silu(g.y) * u.y, silu(g.z) * u.z, silu(g.w) * u.w); }
    let o = o0 + pair * tp.ldo + tp.col_base + n;
    if (n < tp.n) { out[o] = v.x; }
    if (n + 1u < tp.n) { out[o + 1u] = v.y; }
    if (n + 2u < tp.n) { out[o + 2u] = v.z; }
    if (n + 3u < tp.n) { out[o + 3u] = v.w; }
}

// A thread's finished block into out.
fn store_block(t: Tile, lid: vec3<u32>, acc: Acc) {
    let row = t.slot0 + 4u * lid.y;
    let n = t.n0 + 4u * lid.x;
    store_row(t.o0, order[row], n, acc.g0, acc.u0);
    store_row(t.o0, order[row + 1u], n, acc.g1, acc.u1);
    store_row(t.o0, order[row + 2u], n, acc.g2, acc.u2);
    store_row(t.o0, order[row + 3u], n, acc.g3, acc.u3);
}
