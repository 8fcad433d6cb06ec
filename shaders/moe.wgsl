// Mixture-of-experts: routing, per-expert matvec with expert ids read from a GPU buffer, and the
// weighted combine. Math in f32.
//
// route: one workgroup per token.
//   Bindings: 0 params; 1 logits: [T, E] f32; 2 weights: [T, K] f32 out; 3 experts: [T, K] i32 out.
//   Params:   t = T, e = E, k = K, norm = 1 to renormalise the top-k probabilities to sum 1.
//   Dispatch: T workgroups, flat index wid.x + wid.y * nwg.x (groups_for).
//   HF's router: softmax over all E in f32, top-k of the probabilities (descending; ties: lower index
//   first), then (norm_topk_prob) division by the sum of the k kept probabilities.
//
// matvec (entry `main`, vector loads; `main_ragged`, any D): out[p, n] = sum_d W[experts[p], n, d] x[row(p), d]
//   for every (token, slot) pair p = t * K + j.
//   Bindings: 0 params; 1 x: [T, D] (shared by the K slots) or [T*K, D] (one row per pair) f32;
//             2 w: [E_piece, N, D] expert weights of this piece, packed per WTYPE (f32 one per u32; f16 and
//             bf16 two per u32, element 2j in the low half); 3 experts: [T*K] i32; 4 out: [T*K, N] f32.
//   Params:   pairs = T*K, n = N, d = D, k = K, x_per_pair = 1 when x has a row per pair,
//             e_base = first expert of this piece, e_count = experts in this piece.
//   Dispatch: ceil(pairs * N / (WG / TPR)) workgroups, flat index as above; TPR threads per output row.
//             A pair whose expert lies outside [e_base, e_base + e_count) is skipped (another piece, bound
//             separately because the stacked weights exceed one binding, writes it).
//   `main` needs D % 8 == 0 (D % 4 for f32) for 16-byte loads.
//
// combine: out[t, d] = sum_j weights[t, j] * y[t, j, d], slots in order.
//   Bindings: 0 params; 1 y: [T, K, D] f32; 2 weights: [T, K] f32; 3 out: [T, D] f32.
//   Params:   t = T, k = K, d = D.
//   Dispatch: ceil(T * D / WG) workgroups, flat index as above; one thread per output element.

override WG: u32 = 64;
override E_MAX: u32 = 128;  // route: experts held in workgroup memory (>= E)
override TPR: u32 = 16;     // matvec: threads per output row, a power of two dividing WG
override WTYPE: u32 = 2u;   // 0 f32, 1 f16, 2 bf16

struct RouteParams { t: u32, e: u32, k: u32, norm: u32 }
struct MatvecParams { pairs: u32, n: u32, d: u32, k: u32, x_per_pair: u32, e_base: u32, e_count: u32, _pad: u32 }
struct CombineParams { t: u32, k: u32, d: u32, _pad: u32 }

// ---- route ------------------------------------------------------------------------------------------

@group(0) @binding(0) var<uniform> rp: RouteParams;
@group(0) @binding(1) var<storage, read> r_logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> r_weights: array<f32>;
@group(0) @binding(3) var<storage, read_write> r_experts: array<i32>;

var<workgroup> probs: array<f32, E_MAX>;
var<workgroup> red_v: array<f32, WG>;
var<workgroup> red_i: array<u32, WG>;

// (value, index) a beats b: larger value, ties by lower index.
fn beats(va: f32, ia: u32, vb: f32, ib: u32) -> bool {
    return va > vb || (va == vb && ia < ib);
}

@compute @workgroup_size(WG)
fn route(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let tok = wid.x + wid.y * nwg.x;
    let live = tok < rp.t;  // no early return: every thread must reach the barriers
    let row = min(tok, rp.t - 1u) * rp.e;

    // Softmax, the way torch computes it: exp(x - max) / sum.
    var m = -3.4028235e38;
    for (var e = lid; e < rp.e; e += WG) { m = max(m, r_logits[row + e]); }
    red_v[lid] = m;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { red_v[lid] = max(red_v[lid], red_v[lid + s]); }
        workgroupBarrier();
    }
    m = red_v[0];
    workgroupBarrier();
    var acc = 0.0;
    for (var e = lid; e < rp.e; e += WG) {
        let v = exp(r_logits[row + e] - m);
        probs[e] = v;
        acc += v;
    }
    red_v[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { red_v[lid] += red_v[lid + s]; }
        workgroupBarrier();
    }
    let total = red_v[0];
    workgroupBarrier();
    for (var e = lid; e < rp.e; e += WG) { probs[e] = probs[e] / total; }
    workgroupBarrier();

    // Top-k by k rounds of a (value, index) arg-max; a chosen expert is marked -1 (probabilities are >= 0).
    var kept = 0.0;
    for (var j = 0u; j < rp.k; j++) {
        var bv = -1.0;
        var bi = 0xffffffffu;
        for (var e = lid; e < rp.e; e += WG) {
            if (beats(probs[e], e, bv, bi)) { bv = probs[e]; bi = e; }
        }
        red_v[lid] = bv;
        red_i[lid] = bi;
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s = s / 2u) {
            if (lid < s && beats(red_v[lid + s], red_i[lid + s], red_v[lid], red_i[lid])) {
                red_v[lid] = red_v[lid + s];
                red_i[lid] = red_i[lid + s];
            }
            workgroupBarrier();
        }
        let v = red_v[0];
        let i = red_i[0];
        if (lid == 0u && live) {
            r_weights[tok * rp.k + j] = v;
            r_experts[tok * rp.k + j] = i32(i);
            probs[i] = -1.0;
        }
        kept += v;
        workgroupBarrier();
    }
    if (rp.norm == 1u && lid == 0u && live) {
        for (var j = 0u; j < rp.k; j++) { r_weights[tok * rp.k + j] = r_weights[tok * rp.k + j] / kept; }
    }
}

// ---- matvec -----------------------------------------------------------------------------------------

@group(0) @binding(0) var<uniform> mp: MatvecParams;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> experts: array<i32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// #include "lib/row_sum.wgsl"

// #include "lib/packed16.wgsl"

// Which weight row (inside this piece) and x row an output row uses; ok = false when the pair's expert is
// not in this piece (or the row is past the end).
struct Job { ok: bool, w_row: u32, x_row: u32, out_row: u32 }

fn job(row: u32) -> Job {
    var j = Job(false, 0u, 0u, row);
    if (row >= mp.pairs * mp.n) { return j; }
    let pair = row / mp.n;
    let e = experts[pair] - i32(mp.e_base);
    if (e < 0 || u32(e) >= mp.e_count) { return j; }
    j.ok = true;
    j.w_row = u32(e) * mp.n + row % mp.n;
    j.x_row = select(pair / mp.k, pair, mp.x_per_pair == 1u);
    return j;
}

fn reduce_and_store(lid: u32, jb: Job, acc: f32) {
    let total = row_sum(lid, TPR, acc);
    if (lid % TPR == 0u && jb.ok) { out[jb.out_row] = total; }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let jb = job((wid.x + wid.y * nwg.x) * (WG / TPR) + lid / TPR);
    var acc = 0.0;
    if (jb.ok) {
        let words = mp.d / select(8u, 4u, WTYPE == 0u);  // 16-byte weight words per row
        let wbase = jb.w_row * words;
        let xbase = jb.x_row * (mp.d / 4u);
        for (var j = lid % TPR; j < words; j += TPR) {
            let u = w[wbase + j];
            if (WTYPE == 0u) {
                acc += dot(bitcast<vec4<f32>>(u), x[xbase + j]);
            } else {
                acc += dot(vec4<f32>(lo(u.x), hi(u.x), lo(u.y), hi(u.y)), x[xbase + 2u * j])
                     + dot(vec4<f32>(lo(u.z), hi(u.z), lo(u.w), hi(u.w)), x[xbase + 2u * j + 1u]);
            }
        }
    }
    reduce_and_store(lid, jb, acc);
}

// #include "lib/weight_rows.wgsl"

@compute @workgroup_size(WG)
fn main_ragged(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let jb = job((wid.x + wid.y * nwg.x) * (WG / TPR) + lid / TPR);
    var acc = 0.0;
    if (jb.ok) {
        for (var d = lid % TPR; d < mp.d; d += TPR) {
            let xi = jb.x_row * mp.d + d;
            acc += weight(jb.w_row * mp.d + d) * x[xi / 4u][xi % 4u];
        }
    }
    reduce_and_store(lid, jb, acc);
}

// ---- combine ----------------------------------------------------------------------------------------

@group(0) @binding(0) var<uniform> cp: CombineParams;
@group(0) @binding(1) var<storage, read> c_y: array<f32>;
@group(0) @binding(2) var<storage, read> c_weights: array<f32>;
@group(0) @binding(3) var<storage, read_write> c_out: array<f32>;

@compute @workgroup_size(WG)
fn combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= cp.t * cp.d) { return; }
    let tok = i / cp.d;
    let d = i % cp.d;
    var acc = 0.0;
    for (var j = 0u; j < cp.k; j++) {
        acc += c_weights[tok * cp.k + j] * c_y[(tok * cp.k + j) * cp.d + d];
    }
    c_out[i] = acc;
}
