// HF's router for one token in workgroup memory (route_top_k), and moe.wgsl's entry `route` (described in
// moe.wgsl's header) on it; the routed gate_up entries (lib/moe_routed.wgsl) call the same route_top_k, so
// both give the same f32 operations, the same experts and, at the same reduction shape, the same bits. As
// moe.wgsl (reductions in workgroup memory, lib/reduce.wgsl) and moe_sg.wgsl (subgroup operations,
// lib/reduce_sg.wgsl) include it. The including shader declares `override WG`, E_MAX (a power of two, at
// least 64 and at least E) and K_MAX (at least K) before it includes this file (naga 29 panics on an
// override declared after an array sized by an override expression, as route_p is), and includes
// lib/grid.wgsl and one of the two reduction files.
//
// The caller stores the logits into route_p (route_set), each thread those of its own experts lid, lid + WG,
// ...: until route_top_k's first barrier a thread reads only its own slots, so that store needs no barrier
// and the logits are loaded from memory once. Then a max and a sum reduction, the probabilities in place of
// the logits (one barrier), the ranks, the top K into workgroup memory (one barrier). An expert's rank counts
// the probabilities above its own, 16 at a time from four vec4 reads; only the K candidates (rank < K) look
// again for equal probabilities of a lower id, which rank above them too (HF's tie rule).

struct RouteParams { t: u32, e: u32, k: u32, norm: u32 }

@group(0) @binding(0) var<uniform> rp: RouteParams;
@group(0) @binding(1) var<storage, read> r_logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> r_weights: array<f32>;
@group(0) @binding(3) var<storage, read_write> r_experts: array<i32>;

const NOT_A_PROB: f32 = -1.0;  // route_p past E: below every probability

var<workgroup> route_p: array<vec4<f32>, E_MAX / 4u>;  // the logits, then the probabilities, 4 experts a vec4
var<workgroup> top_v: array<f32, K_MAX>;  // the kept probabilities by rank
var<workgroup> top_i: array<u32, K_MAX>;  // their experts

fn route_prob(e: u32) -> f32 {
    return route_p[e / 4u][e % 4u];
}

fn route_set(e: u32, v: f32) {
    route_p[e / 4u][e % 4u] = v;
}

// 1 for each of the four experts of route_p[b] whose probability exceeds v.
fn above4(b: u32, vv: vec4<f32>) -> vec4<f32> {
    return select(vec4<f32>(0.0), vec4<f32>(1.0), route_p[b] > vv);
}

// 1 for each of the four experts 4b .. 4b + 3 whose probability equals v and whose id is below e.
fn tied_below4(b: u32, vv: vec4<f32>, e: u32) -> vec4<f32> {
    let ids = vec4<u32>(4u * b) + vec4<u32>(0u, 1u, 2u, 3u);
    return select(vec4<f32>(0.0), vec4<f32>(1.0), (route_p[b] == vv) & (ids < vec4<u32>(e)));
}

// The top k of the n experts whose logits the threads stored (route_set) into top_v / top_i, in rank
// order. Every thread calls it, in uniform control flow; it ends on a barrier.
fn route_top_k(ln: Lanes, n: u32, k: u32) {
    let lid = ln.lid;
    let e16 = (n + 15u) / 16u * 16u;  // route_p is padded to whole blocks of 16 experts (E_MAX >= this)

    // Softmax, the way torch computes it: exp(x - max) / sum.
    let has0 = lid < n;  // the thread's first expert is lid
    var x0 = 0.0;
    if (has0) { x0 = route_prob(lid); }
    var m = select(-3.4028235e38, x0, has0);
    for (var e = lid + WG; e < n; e += WG) { m = max(m, route_prob(e)); }
    m = wg_max(ln, m);
    var ex0 = 0.0;
    if (has0) { ex0 = exp(x0 - m); }
    var acc = ex0;
    for (var e = lid + WG; e < n; e += WG) { acc += exp(route_prob(e) - m); }
    let total = wg_sum(ln, acc);
    if (lid < e16) { route_set(lid, select(NOT_A_PROB, ex0 / total, has0)); }
    for (var e = lid + WG; e < e16; e += WG) {
        var v = NOT_A_PROB;
        if (e < n) { v = exp(route_prob(e) - m) / total; }
        route_set(e, v);
    }
    workgroupBarrier();

    // Rank of each expert = how many experts beat it (a larger probability, or an equal one of a lower
    // id); ranks are distinct, so rank < K is the top K in order.
    for (var e = lid; e < n; e += WG) {
        let v = route_prob(e);
        let vv = vec4<f32>(v);
        var above = vec4<f32>(0.0);
        for (var b = 0u; b < e16 / 4u; b += 4u) {
            above += (above4(b, vv) + above4(b + 1u, vv)) + (above4(b + 2u, vv) + above4(b + 3u, vv));
        }
        var rank = u32(dot(above, vec4<f32>(1.0)));  // integers below 2^24: exact
        if (rank < k) {
            var tied = vec4<f32>(0.0);
            for (var b = 0u; 4u * b < e; b += 4u) {
                tied += (tied_below4(b, vv, e) + tied_below4(b + 1u, vv, e))
                      + (tied_below4(b + 2u, vv, e) + tied_below4(b + 3u, vv, e));
            }
            rank += u32(dot(tied, vec4<f32>(1.0)));
        }
        if (rank < k) {
            top_v[rank] = v;
            top_i[rank] = e;
        }
    }
    workgroupBarrier();
}

// The routing weight of rank j after route_top_k: its probability, divided by the sum of the k kept ones
// when norm. Each writer sums them itself, in rank order: the same f32 sum in every thread.
fn route_weight(j: u32, k: u32, norm: bool) -> f32 {
    var kept = 0.0;
    for (var i = 0u; i < k; i++) { kept += top_v[i]; }
    return select(top_v[j], top_v[j] / kept, norm);
}

@compute @workgroup_size(WG)
fn route(grid: Grid, ln: Lanes) {
    let tok = group_index(grid);
    if (tok >= rp.t) { return; }  // uniform per workgroup, so the barriers below stay uniform
    let row = tok * rp.e;
    for (var e = ln.lid; e < rp.e; e += WG) { route_set(e, r_logits[row + e]); }
    route_top_k(ln, rp.e, rp.k);
    for (var j = ln.lid; j < rp.k; j += WG) {
        r_weights[tok * rp.k + j] = route_weight(j, rp.k, rp.norm == 1u);
        r_experts[tok * rp.k + j] = i32(top_i[j]);
    }
}
