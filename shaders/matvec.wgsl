// matvec: y[row_base + n] = sum_k W[n, k] * x[k] for one token (decode).
//
// Bindings: 0 params; 1 x: [K] f32; 2 w: [N, K] weight rows of this piece, packed per WTYPE
//           (f32: one per u32; f16 and bf16: two per u32, element 2j in the low half); 3 y: [N_total] f32.
// Params:   n = rows in this piece, k = K, row_base = first output row of this piece (binding splits).
// Dispatch: ceil(n / (WG / TPR)) workgroups, flat index wid.x + wid.y * nwg.x (groups_for). Each row is
//           handled by TPR consecutive threads (a workgroup holds WG / TPR rows), so a thread issues
//           several 16-byte loads per row even for short rows; the loop keeps UNROLL loads in flight.
// Entry points: `main` needs K % 8 == 0 (K % 4 for f32) for 16-byte weight loads; `main_ragged` any K.
//   `multi` is `main` for up to three weights applied to the same x (q/k/v, gate/up) in one dispatch:
//   bindings 1 x, 2 w0, 3 y0, 4 w1, 5 w2, 6 y1, 7 y2; rows [0, n) come from w0, [n, n + n1) from w1,
//   then n2 rows from w2 (row_base must be 0: no binding splits).
//   `swiglu` is `main` over x = silu(gate) * up, computed as it is read (a SwiGLU MLP's down projection
//   without the elementwise dispatch before it): bindings 1 gate [K] f32 (in x's place), 2 w, 3 y,
//   4 up [K] f32; silu as lib/silu.wgsl, the product rounded as elementwise's swiglu rounds it.
//   `multi_norm` is `multi` over x = rmsnorm(h + delta) * norm_w, which each workgroup computes into
//   workgroup memory before its rows (a decoder layer's residual add and the norm before its q/k/v or
//   gate/up projections, without a dispatch of their own): bindings 1 h [K] f32 (in x's place), 2 w0,
//   3 y0, 4 w1, 5 w2, 6 y1, 7 y2, 8 delta [K] f32, 9 norm_w [K] f32, 10 out_h [K] f32 (h + delta,
//   written by workgroup 0; not h or delta, which the other workgroups still read). Overrides: ND4 = K / 4
//   (the workgroup array's length), DELTA (0: x = rmsnorm(h), delta and out_h unused but bound), KEEP_X
//   (1: workgroup 0 also writes x to binding 11, out_x [K] f32, for readers other than these projections).
//   Params add eps (f32 bits) in the sixth word. The norm is rmsnorm's: (v * inverseSqrt(mean(v^2) + eps))
//   * w, v = h + delta rounded to f32 first.
// Accumulation is f32.

override WG: u32 = 256;
override TPR: u32 = 32;    // threads per row; a power of two dividing WG
override WTYPE: u32 = 2u;  // 0 f32, 1 f16, 2 bf16
override ND4: u32 = 1u;    // multi_norm: K / 4
override DELTA: u32 = 1u;  // multi_norm: 1 x = rmsnorm(h + delta), 0 x = rmsnorm(h)
override KEEP_X: u32 = 0u; // multi_norm: 1 x written to out_x as well
// Four, measured against two and eight on an H200 (thinker BF16 decode, one loaded model, 2026-12-02): eight
// (here and in the experts' gate_up) made q/k/v 15.4 -> 20.0 us and the routed gate_up 26.9 -> 30.6 a call,
// decode 185.3 -> 185.4 tok/s; two made them 16.6 and 27.7, 190.9 -> 192.3 tok/s, within run-to-run noise.
const UNROLL: u32 = 4u;

struct Params { n: u32, k: u32, row_base: u32, n1: u32, n2: u32, eps_bits: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@group(0) @binding(4) var<storage, read> w1: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> w2: array<vec4<u32>>;
@group(0) @binding(6) var<storage, read_write> y1: array<f32>;
@group(0) @binding(7) var<storage, read_write> y2: array<f32>;

// #include "lib/rows.wgsl"

// #include "lib/packed16.wgsl"

// #include "lib/silu.wgsl"

// Dot product of one 16-byte weight word with the x values it covers (a, and b for 16-bit weights).
fn dot_values(u: vec4<u32>, a: vec4<f32>, b: vec4<f32>) -> f32 {
    if (WTYPE == 0u) { return dot(bitcast<vec4<f32>>(u), a); }
    return dot(vec4<f32>(lo(u.x), hi(u.x), lo(u.y), hi(u.y)), a) + dot(vec4<f32>(lo(u.z), hi(u.z), lo(u.w), hi(u.w)), b);
}

// dot_values over x; j indexes 16-byte weight words.
fn dot_word(u: vec4<u32>, j: u32) -> f32 {
    if (WTYPE == 0u) { return dot_values(u, x[j], x[j]); }
    return dot_values(u, x[2u * j], x[2u * j + 1u]);
}

// Sums the TPR partial sums of each row of the workgroup and stores the row's result.
fn reduce_and_store(lid: u32, row: u32, acc: f32) {
    let total = row_sum(lid, TPR, acc);
    if (lid % TPR == 0u && row < p.n) { y[p.row_base + row] = total; }
}

@compute @workgroup_size(WG)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let row = thread_row(grid, lid, TPR);
    let lane = lid % TPR;
    var acc = vec4<f32>(0.0);
    if (row < p.n) {  // no early return: every thread must reach the barriers below
        let words = p.k / select(8u, 4u, WTYPE == 0u);
        let base = row * words;
        var j = lane;
        for (; j + (UNROLL - 1u) * TPR < words; j += UNROLL * TPR) {
            // Issue the loads first so UNROLL of them are in flight at once.
            let u0 = w[base + j];
            let u1 = w[base + j + TPR];
            let u2 = w[base + j + 2u * TPR];
            let u3 = w[base + j + 3u * TPR];
            acc += vec4<f32>(dot_word(u0, j), dot_word(u1, j + TPR), dot_word(u2, j + 2u * TPR), dot_word(u3, j + 3u * TPR));
        }
        for (; j < words; j += TPR) { acc.x += dot_word(w[base + j], j); }
    }
    reduce_and_store(lid, row, acc.x + acc.y + acc.z + acc.w);
}

// #include "lib/weight_rows.wgsl"

@compute @workgroup_size(WG)
fn main_ragged(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let row = thread_row(grid, lid, TPR);
    var acc = 0.0;
    if (row < p.n) {
        for (var k = lid % TPR; k < p.k; k += TPR) {
            acc += weight(row * p.k + k) * x[k / 4u][k % 4u];
        }
    }
    reduce_and_store(lid, row, acc);
}

fn load_multi(seg: u32, i: u32) -> vec4<u32> {
    if (seg == 0u) { return w[i]; }
    if (seg == 1u) { return w1[i]; }
    return w2[i];
}

// The rows of `multi` and `multi_norm`: x from binding 1, or (normed) the workgroup's xs.
fn multi_rows(grid: Grid, lid: u32, normed: bool) {
    let row = thread_row(grid, lid, TPR);
    let lane = lid % TPR;
    let total = p.n + p.n1 + p.n2;
    // Which weight this thread's row comes from, and the row within it.
    let seg = select(select(2u, 1u, row < p.n + p.n1), 0u, row < p.n);
    let local = row - select(select(p.n + p.n1, p.n, seg == 1u), 0u, seg == 0u);
    var acc = vec4<f32>(0.0);
    if (row < total) {
        let words = p.k / select(8u, 4u, WTYPE == 0u);
        let base = local * words;
        var j = lane;
        for (; j + (UNROLL - 1u) * TPR < words; j += UNROLL * TPR) {
            let u0 = load_multi(seg, base + j);
            let u1 = load_multi(seg, base + j + TPR);
            let u2 = load_multi(seg, base + j + 2u * TPR);
            let u3 = load_multi(seg, base + j + 3u * TPR);
            acc += vec4<f32>(dot_in(u0, j, normed), dot_in(u1, j + TPR, normed), dot_in(u2, j + 2u * TPR, normed),
                             dot_in(u3, j + 3u * TPR, normed));
        }
        for (; j < words; j += TPR) { acc.x += dot_in(load_multi(seg, base + j), j, normed); }
    }
    let sum = row_sum(lid, TPR, acc.x + acc.y + acc.z + acc.w);
    if (lane == 0u && row < total) {
        if (seg == 0u) { y[local] = sum; } else if (seg == 1u) { y1[local] = sum; } else { y2[local] = sum; }
    }
}

@compute @workgroup_size(WG)
fn multi(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    multi_rows(grid, lid, false);
}

// `swiglu`'s up, at w1's binding (no entry point uses both).
@group(0) @binding(4) var<storage, read> up: array<vec4<f32>>;

fn act4(i: u32) -> vec4<f32> {
    let g = x[i];
    return vec4<f32>(silu(g.x), silu(g.y), silu(g.z), silu(g.w)) * up[i];
}

fn dot_act(u: vec4<u32>, j: u32) -> f32 {
    if (WTYPE == 0u) { return dot_values(u, act4(j), act4(j)); }
    return dot_values(u, act4(2u * j), act4(2u * j + 1u));
}

@compute @workgroup_size(WG)
fn swiglu(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let row = thread_row(grid, lid, TPR);
    let lane = lid % TPR;
    var acc = vec4<f32>(0.0);
    if (row < p.n) {
        let words = p.k / select(8u, 4u, WTYPE == 0u);
        let base = row * words;
        var j = lane;
        for (; j + (UNROLL - 1u) * TPR < words; j += UNROLL * TPR) {
            let u0 = w[base + j];
            let u1 = w[base + j + TPR];
            let u2 = w[base + j + 2u * TPR];
            let u3 = w[base + j + 3u * TPR];
            acc += vec4<f32>(dot_act(u0, j), dot_act(u1, j + TPR), dot_act(u2, j + 2u * TPR), dot_act(u3, j + 3u * TPR));
        }
        for (; j < words; j += TPR) { acc.x += dot_act(w[base + j], j); }
    }
    reduce_and_store(lid, row, acc.x + acc.y + acc.z + acc.w);
}

@group(0) @binding(8) var<storage, read> delta: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read> norm_w: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read_write> out_h: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read_write> out_x: array<vec4<f32>>;

var<workgroup> xs: array<vec4<f32>, ND4>;

@compute @workgroup_size(WG)
fn multi_norm(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    // The normed x, into workgroup memory (every workgroup: there is no grid-wide barrier).
    var ss = 0.0;
    for (var i = lid; i < ND4; i += WG) {
        var v = x[i];
        if (DELTA == 1u) { v += delta[i]; }
        xs[i] = v;
        ss += dot(v, v);
    }
    let r = inverseSqrt(row_sum(lid, WG, ss) / f32(4u * ND4) + bitcast<f32>(p.eps_bits));
    let first = group_index(grid) == 0u;
    for (var i = lid; i < ND4; i += WG) {
        let v = xs[i];
        if (DELTA == 1u && first) { out_h[i] = v; }
        let xv = (v * r) * norm_w[i];
        if (KEEP_X == 1u && first) { out_x[i] = xv; }
        xs[i] = xv;
    }
    workgroupBarrier();  // xs complete, and row_sum's array free again
    multi_rows(grid, lid, true);
}

fn dot_in(u: vec4<u32>, j: u32, normed: bool) -> f32 {
    if (!normed) { return dot_word(u, j); }
    if (WTYPE == 0u) { return dot_values(u, xs[j], xs[j]); }
    return dot_values(u, xs[2u * j], xs[2u * j + 1u]);
}
