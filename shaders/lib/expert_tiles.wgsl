// Expert tiles (prefill): the selected experts' projections with the (token, slot) pairs grouped by
// expert (moe.wgsl's `group`), so that a workgroup multiplies one expert's weight tile by a tile of the
// pairs that chose it: each weight is read once per tile of pairs instead of once per pair.
// Included by moe_tiles.wgsl (f32/f16/bf16 weights) and moe_tiles_q8.wgsl (Q8_0), which bind the
// weights from binding 5 on and define
//   fn w_quad(row: u32, q: u32) -> vec4<f32>   weights 4q .. 4q+3 of row `row` of the bound piece, zeros
//                                              past kdim.
//
// entry `experts`, with e the expert of pair p and N = n:
//   GATE_UP = true:  out[p, f] = silu(W[e, f] . x[p / x_div]) * (W[e, N + f] . x[p / x_div])
//   GATE_UP = false: out[p, f] = W[e, f] . x[p / x_div]
//   Bindings: 0 params; 1 x: [rows, kdim] f32 (gate_up: the tokens, x_div = K; down: the pairs'
//             activations, x_div = 1); 2 order: [tiles * TM] u32; 3 tile_expert: [tiles] i32 (both from
//             `group` with tm = TM); 4 out: [P, N] f32; 5.. the weights, [E_piece, 2N or N, kdim].
//   Params:   pairs = P, n = N, kdim, x_div, e_base, e_count: the bound piece's experts. Tiles of other
//             experts return at once, so one dispatch per piece writes each pair's row exactly once.
//   Dispatch: (ceil(N / TN), tiles) workgroups of (TN/4) x (TM/4) threads; each thread computes a 4 x 4
//             block (4 pairs x 4 outputs), twice over (gate and up) with GATE_UP.
// The K loop stages TK = 32 values a step (one Q8_0 block), x and weights as quads of 4 along K.
// VEC = true needs kdim % 4 == 0 (x rows and weight quads on whole words); false reads element-wise.

override TM: u32 = 64u;        // pairs per tile: 16, 32 or 64
override GATE_UP: bool = true;
override VEC: bool = true;
const TN: u32 = 64u;           // outputs per tile
const TK: u32 = 32u;
const NO_PAIR: u32 = 0xffffffffu;

struct TileParams { pairs: u32, n: u32, kdim: u32, x_div: u32, e_base: u32, e_count: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<uniform> tp: TileParams;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> order: array<u32>;
@group(0) @binding(3) var<storage, read> tile_expert: array<i32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// #include "lib/silu.wgsl"

// Staged tiles, K-major so that a thread reads its 4 pairs (or 4 outputs) of one k as one vec4.
var<workgroup> xs: array<vec4<f32>, TK * TM / 4u>;  // [k][pair / 4]
var<workgroup> gs: array<vec4<f32>, TK * TN / 4u>;  // [k][output / 4]: gate rows, or down's rows
var<workgroup> us: array<vec4<f32>, TK * TN / 4u>;  // [k][output / 4]: up rows (GATE_UP)

// Values 4q .. 4q+3 of x row `row`, zeros past kdim.
fn x_quad(row: u32, q: u32) -> vec4<f32> {
    if (VEC) { return x[row * (tp.kdim / 4u) + q]; }
    var v = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        let k = 4u * q + c;
        let i = row * tp.kdim + k;
        if (k < tp.kdim) { v[c] = x[i / 4u][i % 4u]; }
    }
    return v;
}

// Quad q of weight row `row` (of the piece) into column c of the staged gate/down tile, or of the up
// tile. (A workgroup pointer cannot be a function argument in naga, hence the flag.)
fn stage_w(up: bool, row: u32, c: u32, q: u32, ok: bool) {
    var v = vec4<f32>(0.0);
    if (ok) { v = w_quad(row, q); }
    let kq = (q % (TK / 4u)) * 4u;
    for (var j = 0u; j < 4u; j++) {
        let i = (kq + j) * (TN / 4u) + c / 4u;
        if (up) { us[i][c % 4u] = v[j]; } else { gs[i][c % 4u] = v[j]; }
    }
}

@compute @workgroup_size(TN / 4u, TM / 4u)
fn experts(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let e = tile_expert[wid.y] - i32(tp.e_base);
    if (e < 0 || u32(e) >= tp.e_count) { return; }  // the same for the whole workgroup
    let threads = TN * TM / 16u;
    let n0 = wid.x * TN;
    let slot0 = wid.y * TM;
    let w0 = u32(e) * select(1u, 2u, GATE_UP) * tp.n + n0;  // the tile's first (gate) weight row
    let quads = (tp.kdim + 3u) / 4u;
    var g: array<vec4<f32>, 4>;  // g[i][j]: pair 4 * lid.y + i, output 4 * lid.x + j
    var u: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        g[i] = vec4<f32>(0.0);
        u[i] = vec4<f32>(0.0);
    }
    for (var k0 = 0u; k0 < quads; k0 += TK / 4u) {
        // Consecutive threads take consecutive pairs (or outputs) of one quad: the workgroup-memory
        // stores are then consecutive words, free of bank conflicts.
        for (var i = li; i < TM * (TK / 4u); i += threads) {
            let r = i % TM;
            let q = k0 + i / TM;
            let pair = order[slot0 + r];
            var v = vec4<f32>(0.0);
            if (pair != NO_PAIR && q < quads) { v = x_quad(pair / tp.x_div, q); }
            let kq = (i / TM) * 4u;
            for (var j = 0u; j < 4u; j++) { xs[(kq + j) * (TM / 4u) + r / 4u][r % 4u] = v[j]; }
        }
        for (var i = li; i < TN * (TK / 4u); i += threads) {
            let c = i % TN;
            let q = k0 + i / TN;
            let ok = n0 + c < tp.n && q < quads;
            stage_w(false, w0 + c, c, q, ok);
            if (GATE_UP) { stage_w(true, w0 + tp.n + c, c, q, ok); }
        }
        workgroupBarrier();
        for (var k = 0u; k < TK; k++) {
            let a = xs[k * (TM / 4u) + lid.y];
            let b = gs[k * (TN / 4u) + lid.x];
            for (var i = 0u; i < 4u; i++) { g[i] = fma(vec4<f32>(a[i]), b, g[i]); }
            if (GATE_UP) {
                let c = us[k * (TN / 4u) + lid.x];
                for (var i = 0u; i < 4u; i++) { u[i] = fma(vec4<f32>(a[i]), c, u[i]); }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let pair = order[slot0 + 4u * lid.y + i];
        if (pair == NO_PAIR) { continue; }
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + 4u * lid.x + j;
            if (n < tp.n) {
                var v = g[i][j];
                if (GATE_UP) { v = silu(v) * u[i][j]; }
                out[pair * tp.n + n] = v;
            }
        }
    }
}
