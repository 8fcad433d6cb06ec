// attention: grouped-query causal attention of T new tokens over a KV cache, and the cache append.
//
// The cache of one layer is k, v: [max_len, n_kv, D] f32. `step` is a u32 [4] tensor = (start, reserved...)
// written by the model once per step, so params and bind groups are the same from one step to the next.
// The T new tokens sit at positions start .. start + T - 1. All entries need D % 4 == 0 (vec4 rows).
//
// Entry `kv_append`: cache rows start + t <- k_new[t], v_new[t]; rows >= max_len are dropped.
//   Bindings: 0 params; 1 k_new: [T, n_kv, D] f32; 2 v_new: [T, n_kv, D] f32; 3 cache_k (read_write);
//             4 cache_v (read_write); 5 step: [4] u32.
//   Params:   n_tokens = T, row4 = n_kv * D / 4, max_len.
//   Dispatch: one thread per vec4 of k_new (T * row4), workgroups of WG, flat index (groups_for).
//
// Entry `main` (prefill and decode): out[t, h] = softmax_j(scale * q[t, h] . k[j, g]) v[j, g] over keys
//   j = lo .. start + t, where g = h / (Hq / n_kv) and lo = 0, or with a sliding window W > 0
//   lo = max(0, start + t - W + 1) (HF masking_utils.sliding_window_overlay: kv_idx > q_idx - W).
//   Bindings: 0 params; 1 q: [T, Hq, D] f32; 2 cache_k: [max_len, n_kv, D] f32; 3 cache_v; 4 step: [4] u32;
//             5 out: [T, Hq, D] f32.
//   Params:   n_tokens = T, n_heads = Hq, n_kv, d4 = D / 4, max_len, window (0 = none), scale (f32),
//             split, n_splits (split path only); sec_h, sec_w, eps (attention_rope.wgsl's only).
//   Dispatch: one workgroup of WG threads per (token, head), flat index wid.x + wid.y * nwg.x = t * Hq + h.
//   Online softmax over chunks of WG keys: each thread scores one key of the chunk, the chunk max and sum
//   are tree reductions in workgroup memory, then the workgroup splits into WG / (D/4) key groups, each
//   thread (group, vec4 d) rescales its running sum and adds p_j * v_j[d] for every WG / (D/4)-th key of
//   the chunk; the groups' sums are added once, after the last chunk. WG must be a power of two, >= D / 4.
//   Keys past max_len (a step that overflowed the cache) are not read; a query left with no key writes 0.
//
// Entries `decode` (one workgroup a row, more threads and a shorter chain than `main`) and `split_partial`
// + `split_combine` (the keys cut into fixed slices that run in parallel): the same attention for decode,
// in lib/attn_decode_entries.wgsl on lib/attn_decode.wgsl's kernel (described there), which
// shaders/attention_sg.wgsl builds on subgroup operations; shaders/attention_rope.wgsl has the decode entry
// that normalises, rotates and appends its own token.
//
// Entry `segments`: bidirectional attention inside segments (block-diagonal windows, Transformers'
//   cu_seqlens: an encoder's windows of audio frames or an image's patches). Query t attends to keys
//   bounds[2t] .. bounds[2t + 1] - 1, before and after it. Bindings as `main` plus 6 bounds: [T, 2] u32;
//   the keys sit in cache rows 0 .. T - 1 (step[0] = 0). Params and dispatch as `main`.

override WG: u32 = 64u;

struct AppendParams { n_tokens: u32, row4: u32, max_len: u32, _p0: u32 }

// kv_append's bindings
@group(0) @binding(0) var<uniform> ap: AppendParams;
@group(0) @binding(1) var<storage, read> k_new: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> v_new: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> cache_k_w: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> cache_v_w: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> step_a: array<u32>;

// #include "lib/grid.wgsl"

// #include "lib/attn_common.wgsl"

@compute @workgroup_size(WG)
fn kv_append(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let g = group_index(grid) * WG + lid;
    if (g >= ap.n_tokens * ap.row4) { return; }
    let row = step_a[0] + g / ap.row4;
    if (row >= ap.max_len) { return; }
    let dst = row * ap.row4 + g % ap.row4;
    cache_k_w[dst] = k_new[g];
    cache_v_w[dst] = v_new[g];
}

var<workgroup> qs: array<vec4<f32>, WG>;   // this (token, head)'s query, D/4 vec4s
var<workgroup> red_max: array<f32, WG>;
var<workgroup> red_sum: array<f32, WG>;
var<workgroup> probs: array<f32, WG>;      // p_j of the chunk's keys
var<workgroup> acc_w: array<vec4<f32>, WG>; // each key group's sum p v, added up at the end of `attend`

struct Partial { m: f32, l: f32, acc: vec4<f32> }  // running max, sum of p, this thread's vec4 of sum p v

// Online softmax of row r's query over keys [k0, k1), in chunks of WG keys. Must be called in uniform
// control flow with k0, k1 uniform over the workgroup.
fn attend(r: Row, k0: u32, k1: u32, lid: u32) -> Partial {
    if (lid < p.d4) { qs[lid] = q[r.th * p.d4 + lid]; }
    workgroupBarrier();
    var st = Partial(NEG_BIG, 0.0, vec4<f32>(0.0));
    for (var c0 = k0; c0 < k1; c0 += WG) {
        let j = c0 + lid;
        let valid = j < k1;
        var s = NEG_BIG;
        if (valid) {
            let kb = (j * p.n_kv + r.kvh) * p.d4;
            var a = vec4<f32>(0.0);  // 8 independent partial dots
            var b = vec4<f32>(0.0);
            var d = 0u;
            for (; d + 8u <= p.d4; d += 8u) {
                // Issue all eight loads before the first use: a loop turn that waits on its one load
                // before issuing the next pays the full memory latency per vec4 of the key.
                let kv0 = cache_k[kb + d];
                let kv1 = cache_k[kb + d + 1u];
                let kv2 = cache_k[kb + d + 2u];
                let kv3 = cache_k[kb + d + 3u];
                let kv4 = cache_k[kb + d + 4u];
                let kv5 = cache_k[kb + d + 5u];
                let kv6 = cache_k[kb + d + 6u];
                let kv7 = cache_k[kb + d + 7u];
                a += vec4<f32>(dot(qs[d], kv0), dot(qs[d + 1u], kv1), dot(qs[d + 2u], kv2), dot(qs[d + 3u], kv3));
                b += vec4<f32>(dot(qs[d + 4u], kv4), dot(qs[d + 5u], kv5), dot(qs[d + 6u], kv6), dot(qs[d + 7u], kv7));
            }
            for (; d < p.d4; d++) { a.x += dot(qs[d], cache_k[kb + d]); }
            s = dot(a + b, vec4<f32>(1.0)) * p.scale;
        }
        red_max[lid] = s;
        workgroupBarrier();
        for (var w = WG / 2u; w > 0u; w = w / 2u) {
            if (lid < w) { red_max[lid] = max(red_max[lid], red_max[lid + w]); }
            workgroupBarrier();
        }
        let m_new = max(st.m, red_max[0]);
        var pj = 0.0;
        if (valid) { pj = exp(s - m_new); }
        probs[lid] = pj;
        red_sum[lid] = pj;
        workgroupBarrier();
        for (var w = WG / 2u; w > 0u; w = w / 2u) {
            if (lid < w) { red_sum[lid] += red_sum[lid + w]; }
            workgroupBarrier();
        }
        // exp(NEG_BIG - m) would overflow the subtraction, so the first chunk sets alpha = 0 directly.
        let alpha = select(exp(st.m - m_new), 0.0, c0 == k0);
        st.l = st.l * alpha + red_sum[0];
        st.m = m_new;
        // Thread lid adds vec4 lid % (D/4) of keys gi, gi + n_grp, ... of the chunk (key group gi), eight
        // loads in flight at a time: one load per key, each waited on, by D/4 threads was most of the time
        // of a decode slice (H200: ~0.5 us a load).
        let n_grp = WG / p.d4;
        let gi = lid / p.d4;
        if (gi < n_grp) {
            let n = min(WG, k1 - c0);
            let ks = p.n_kv * p.d4;  // vec4s from one key's row to the next
            let vb = (c0 * p.n_kv + r.kvh) * p.d4 + lid % p.d4;
            var a = vec4<f32>(0.0);
            var b = vec4<f32>(0.0);
            var jj = gi;
            for (; jj + 7u * n_grp < n; jj += 8u * n_grp) {
                let v0 = cache_v[vb + jj * ks];
                let v1 = cache_v[vb + (jj + n_grp) * ks];
                let v2 = cache_v[vb + (jj + 2u * n_grp) * ks];
                let v3 = cache_v[vb + (jj + 3u * n_grp) * ks];
                let v4 = cache_v[vb + (jj + 4u * n_grp) * ks];
                let v5 = cache_v[vb + (jj + 5u * n_grp) * ks];
                let v6 = cache_v[vb + (jj + 6u * n_grp) * ks];
                let v7 = cache_v[vb + (jj + 7u * n_grp) * ks];
                a += probs[jj] * v0 + probs[jj + n_grp] * v1 + probs[jj + 2u * n_grp] * v2 + probs[jj + 3u * n_grp] * v3;
                b += probs[jj + 4u * n_grp] * v4 + probs[jj + 5u * n_grp] * v5 + probs[jj + 6u * n_grp] * v6
                   + probs[jj + 7u * n_grp] * v7;
            }
            for (; jj < n; jj += n_grp) { a += probs[jj] * cache_v[vb + jj * ks]; }
            st.acc = st.acc * alpha + (a + b);
        }
        // The next chunk overwrites red_max, red_sum and probs only after its first barrier, which every
        // thread reaches after it has finished reading them here.
    }
    acc_w[lid] = st.acc;
    workgroupBarrier();
    if (lid < p.d4) {
        for (var g = 1u; g < WG / p.d4; g++) { st.acc += acc_w[g * p.d4 + lid]; }
    }
    return st;
}

fn store_row(th: u32, st: Partial, lid: u32) {
    if (lid < p.d4) {
        out[th * p.d4 + lid] = select(vec4<f32>(0.0), st.acc / st.l, st.l > 0.0);
    }
}

@compute @workgroup_size(WG)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let th = group_index(grid);
    if (th >= p.n_tokens * p.n_heads) { return; }  // uniform per workgroup, so the barriers stay uniform
    let r = row_of(th, step[0]);
    store_row(th, attend(r, r.lo, r.hi, lid), lid);
}

@group(0) @binding(6) var<storage, read> bounds: array<u32>;

@compute @workgroup_size(WG)
fn segments(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let th = group_index(grid);
    if (th >= p.n_tokens * p.n_heads) { return; }
    var r = row_of(th, step[0]);
    let t = th / p.n_heads;
    r.lo = bounds[2u * t];
    r.hi = min(bounds[2u * t + 1u], p.max_len);
    store_row(th, attend(r, r.lo, r.hi, lid), lid);
}

// The decode entries, with their reductions in workgroup memory.
// #include "lib/reduce.wgsl"

// #include "lib/attn_decode.wgsl"

// #include "lib/attn_decode_entries.wgsl"
