// FROZEN BASELINE for bench/kernels.py --decode (old-vs-new decode latency, issue 16): shaders/moe.wgsl (its `route` entry only) as of
// commit fdecbea, before the decode kernels were reworked. Not a kernel of the package (ops never load it;
// the registry lists shaders/ only). Delete once the H200 numbers are in.
//
// Mixture-of-experts: routing, and the selected experts' SwiGLU MLP in two dispatches that read the
// expert ids and routing weights from GPU buffers. Math in f32.
//
// route: one workgroup per token.
//   Bindings: 0 params; 1 logits: [T, E] f32; 2 weights: [T, K] f32 out; 3 experts: [T, K] i32 out.
//   Params:   t = T, e = E, k = K, norm = 1 to renormalise the top-k probabilities to sum 1.
//   Dispatch: T workgroups of WG threads (about one per expert), flat index wid.x + wid.y * nwg.x.
//   HF's router: softmax over all E in f32, top-k of the probabilities (descending; ties: lower index
//   first), then (norm_topk_prob) division by the sum of the k kept probabilities. The top-k is by rank:
//   each expert counts the experts that beat it, so the whole selection takes one barrier, not K rounds
//   of a reduction.
//
override WG: u32 = 64;
override E_MAX: u32 = 128;  // route: experts held in workgroup memory (>= E)
override K_MAX: u32 = 8;    // route: kept experts held in workgroup memory (>= K)

struct RouteParams { t: u32, e: u32, k: u32, norm: u32 }

// #include "lib/rows.wgsl"

// ---- route ------------------------------------------------------------------------------------------

@group(0) @binding(0) var<uniform> rp: RouteParams;
@group(0) @binding(1) var<storage, read> r_logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> r_weights: array<f32>;
@group(0) @binding(3) var<storage, read_write> r_experts: array<i32>;

var<workgroup> probs: array<f32, E_MAX>;
var<workgroup> top_v: array<f32, K_MAX>;  // the kept probabilities by rank
var<workgroup> top_i: array<u32, K_MAX>;

// (value, index) a beats b: larger value, ties by lower index.
fn beats(va: f32, ia: u32, vb: f32, ib: u32) -> bool {
    return va > vb || (va == vb && ia < ib);
}

@compute @workgroup_size(WG)
fn route(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let tok = group_index(grid);
    if (tok >= rp.t) { return; }  // uniform per workgroup, so the barriers below stay uniform
    let row = tok * rp.e;

    // Softmax, the way torch computes it: exp(x - max) / sum.
    var m = -3.4028235e38;
    for (var e = lid; e < rp.e; e += WG) { m = max(m, r_logits[row + e]); }
    m = row_max(lid, WG, m);
    workgroupBarrier();
    var acc = 0.0;
    for (var e = lid; e < rp.e; e += WG) {
        let v = exp(r_logits[row + e] - m);
        probs[e] = v;
        acc += v;
    }
    let total = row_sum(lid, WG, acc);
    for (var e = lid; e < rp.e; e += WG) { probs[e] = probs[e] / total; }
    workgroupBarrier();

    // Rank of each expert = how many experts beat it; ranks are distinct, so rank < K is the top-K in order.
    // Four comparisons a step and no early exit: the count is a chain of workgroup-memory reads, and a
    // loop that tests `rank < K` each turn waits on every read in turn.
    for (var e = lid; e < rp.e; e += WG) {
        let v = probs[e];
        var rank = 0u;
        var o = 0u;
        for (; o + 4u <= rp.e; o += 4u) {
            let p0 = probs[o];
            let p1 = probs[o + 1u];
            let p2 = probs[o + 2u];
            let p3 = probs[o + 3u];
            rank += u32(beats(p0, o, v, e)) + u32(beats(p1, o + 1u, v, e)) + u32(beats(p2, o + 2u, v, e))
                  + u32(beats(p3, o + 3u, v, e));
        }
        for (; o < rp.e; o++) { rank += u32(beats(probs[o], o, v, e)); }
        if (rank < rp.k) {
            top_v[rank] = v;
            top_i[rank] = e;
        }
    }
    workgroupBarrier();
    // Every writer sums the kept probabilities itself, in rank order: the same f32 sum in each thread.
    for (var j = lid; j < rp.k; j += WG) {
        var kept = 0.0;
        for (var i = 0u; i < rp.k; i++) { kept += top_v[i]; }
        r_weights[tok * rp.k + j] = select(top_v[j], top_v[j] / kept, rp.norm == 1u);
        r_experts[tok * rp.k + j] = i32(top_i[j]);
    }
}

