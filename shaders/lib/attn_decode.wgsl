// Decode attention: the single-pass entry `decode` and the split-K pair `split_partial` + `split_combine`.
// shaders/attention.wgsl includes this file with lib/reduce.wgsl (reductions in workgroup memory) and
// shaders/attention_sg.wgsl with lib/reduce_sg.wgsl (subgroup operations), so the two are the same kernels
// but for their reductions. The including shader declares `override WG` and includes lib/grid.wgsl.
// Params, bindings, masking and the output are those of attention.wgsl's `main` (lib/attn_common.wgsl);
// D4 = D / 4 is an override constant here (D4 <= WG): these pipelines are built per head dim, so each
// key's D / 4 products are written out in straight-line code and the guards past D4 fold away.
//
// Entry `decode`: `main` for decode rows, with more threads and a shorter chain a chunk.
//   Dispatch: one workgroup of WG threads per row t * Hq + h, flat index (groups_for).
//   Chunks of WG keys: thread i scores key i of the chunk (q and the key's row read together), one max
//   reduction gives the chunk's new running max, p_j goes to workgroup memory, then WG / D4 key groups
//   each accumulate p_j v_j[d] and p_j for every (WG / D4)-th key, 16 keys a turn; the first turn's value
//   loads are issued with the score loads, before the reduction. The groups' sums are added once, after
//   the last chunk. At 100 keys and WG = 256 that is one chunk, one round of loads (keys and values
//   together), a reduction, one barrier, and the final barrier.
//
// Split-K decode ("flash decoding"), for caches too long for one workgroup a row: the keys are cut into
// n_splits = ceil(max_len / split) fixed slices, so the grid and params do not change as the context
// grows; slices outside [lo, hi) return at once. A second entry merges the slices of each row.
// Entry `split_partial`: bindings 0 params; 1 q; 2 cache_k; 3 cache_v; 4 step (as `main`);
//   5 part: [T * Hq, n_splits, D/4 + 1] vec4 f32, per (row, slice) the unnormalised sum p v, then (m, l, 0, 0).
//   Slices with no key of [lo, hi) write nothing (split_combine reads only the others).
//   Dispatch: (T * Hq, n_splits) workgroups of WG threads: x = row t * Hq + h, y = slice. Rows vary
//   fastest so the query heads that share a kv head read the same slice of K and V close together in
//   time, from cache. (Serving all heads of a kv group from one workgroup reads K and V once, but on an
//   H200 through Vulkan it ran 1.7x to 4x slower than this: fewer workgroups, longer serial loops.)
// Entry `split_combine`: bindings 0 params; 1 part (read); 2 out: [T, Hq, D] f32; 3 step.
//   Dispatch: one workgroup of WG threads per row t * Hq + h, flat index (groups_for). Only the slices
//   that hold keys of [lo, hi) are read: threads stride over them for the max, then WG / D4 slice groups
//   accumulate the weighted sums and l, four slices a turn in flight; one more barrier adds the groups.
// Params: as `main`, with split = keys per slice and n_splits (unused by `decode`).

override D4: u32 = 32u;  // D / 4, at most WG

var<workgroup> dec_probs: array<f32, WG>;        // p_j of the chunk's keys
var<workgroup> dec_acc: array<vec4<f32>, WG>;    // each key (or slice) group's sum of p v
var<workgroup> dec_l: array<f32, WG>;            // each group's sum of p (WG / D4 of them)

struct DecPartial { m: f32, l: f32, acc: vec4<f32> }  // running max, sum of p, this thread's vec4 of sum p v

// Products n .. n + 3 of the vec4s of query row qb and key row kb (each the index of its row's first vec4);
// those at or past D4 are 0. With D4 a constant the guards fold away.
fn qk4(qb: u32, kb: u32, n: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    if (n < D4) { r.x = dot(q[qb + n], cache_k[kb + n]); }
    if (n + 1u < D4) { r.y = dot(q[qb + n + 1u], cache_k[kb + n + 1u]); }
    if (n + 2u < D4) { r.z = dot(q[qb + n + 2u], cache_k[kb + n + 2u]); }
    if (n + 3u < D4) { r.w = dot(q[qb + n + 3u], cache_k[kb + n + 3u]); }
    return r;
}

// q . k over the whole head: straight-line code up to D = 128, every load issued before the first sum (a
// loop turn that waits on its loads before the next turn's pays the memory latency once a turn).
fn qk_dot(qb: u32, kb: u32) -> f32 {
    var a = qk4(qb, kb, 0u) + qk4(qb, kb, 4u);
    var b = qk4(qb, kb, 8u) + qk4(qb, kb, 12u);
    if (D4 > 16u) {
        a += qk4(qb, kb, 16u) + qk4(qb, kb, 20u);
        b += qk4(qb, kb, 24u) + qk4(qb, kb, 28u);
    }
    for (var d = 32u; d < D4; d += 4u) { a += qk4(qb, kb, d); }  // D > 128
    return dot(a + b, vec4<f32>(1.0));
}

// p_j of chunk key j, 0 past the chunk's n keys.
fn dec_p(j: u32, n: u32) -> f32 {
    return select(0.0, dec_probs[min(j, n - 1u)], j < n);
}

// A thread's 16 value vec4s of one turn: vec4 d of keys j, j + g, ..., j + 15 g of the chunk.
struct Vals {
    v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>, v4: vec4<f32>, v5: vec4<f32>, v6: vec4<f32>, v7: vec4<f32>,
    v8: vec4<f32>, v9: vec4<f32>, v10: vec4<f32>, v11: vec4<f32>, v12: vec4<f32>, v13: vec4<f32>, v14: vec4<f32>, v15: vec4<f32>,
}

// Vec4 d of chunk key j for the thread whose vec4 of the chunk's first key is vb (ks vec4s from a key's row
// to the next); past the chunk's n keys its last key instead (in bounds, already in cache; weighted 0).
fn dec_v(vb: u32, ks: u32, j: u32, n: u32) -> vec4<f32> {
    return cache_v[vb + min(j, n - 1u) * ks];
}

fn load_vals(vb: u32, ks: u32, j: u32, g: u32, n: u32) -> Vals {
    return Vals(dec_v(vb, ks, j, n), dec_v(vb, ks, j + g, n), dec_v(vb, ks, j + 2u * g, n), dec_v(vb, ks, j + 3u * g, n),
                dec_v(vb, ks, j + 4u * g, n), dec_v(vb, ks, j + 5u * g, n), dec_v(vb, ks, j + 6u * g, n), dec_v(vb, ks, j + 7u * g, n),
                dec_v(vb, ks, j + 8u * g, n), dec_v(vb, ks, j + 9u * g, n), dec_v(vb, ks, j + 10u * g, n), dec_v(vb, ks, j + 11u * g, n),
                dec_v(vb, ks, j + 12u * g, n), dec_v(vb, ks, j + 13u * g, n), dec_v(vb, ks, j + 14u * g, n), dec_v(vb, ks, j + 15u * g, n));
}

// sum_i p_(j + i g) v_i of a turn's values.
fn weigh_vals(x: Vals, j: u32, g: u32, n: u32) -> vec4<f32> {
    let a = ((dec_p(j, n) * x.v0 + dec_p(j + g, n) * x.v1) + (dec_p(j + 2u * g, n) * x.v2 + dec_p(j + 3u * g, n) * x.v3))
          + ((dec_p(j + 4u * g, n) * x.v4 + dec_p(j + 5u * g, n) * x.v5) + (dec_p(j + 6u * g, n) * x.v6 + dec_p(j + 7u * g, n) * x.v7));
    let b = ((dec_p(j + 8u * g, n) * x.v8 + dec_p(j + 9u * g, n) * x.v9) + (dec_p(j + 10u * g, n) * x.v10 + dec_p(j + 11u * g, n) * x.v11))
          + ((dec_p(j + 12u * g, n) * x.v12 + dec_p(j + 13u * g, n) * x.v13) + (dec_p(j + 14u * g, n) * x.v14 + dec_p(j + 15u * g, n) * x.v15));
    return a + b;
}

// sum_i p_(j + i g) of a turn.
fn weigh_sum(j: u32, g: u32, n: u32) -> f32 {
    return (((dec_p(j, n) + dec_p(j + g, n)) + (dec_p(j + 2u * g, n) + dec_p(j + 3u * g, n)))
          + ((dec_p(j + 4u * g, n) + dec_p(j + 5u * g, n)) + (dec_p(j + 6u * g, n) + dec_p(j + 7u * g, n))))
          + (((dec_p(j + 8u * g, n) + dec_p(j + 9u * g, n)) + (dec_p(j + 10u * g, n) + dec_p(j + 11u * g, n)))
          + ((dec_p(j + 12u * g, n) + dec_p(j + 13u * g, n)) + (dec_p(j + 14u * g, n) + dec_p(j + 15u * g, n))));
}

// Online softmax of row r's query over keys [k0, k1), in chunks of WG keys. Call in uniform control flow
// with k0, k1 uniform over the workgroup. The result's acc and l are the whole row's in threads lid < D4;
// m is every thread's.
fn attend_dec(ln: Lanes, r: Row, k0: u32, k1: u32) -> DecPartial {
    let lid = ln.lid;
    let qb = r.th * D4;
    let ks = p.n_kv * D4;  // vec4s from one key's row to the next
    let g = WG / D4;       // key groups
    let gi = lid / D4;
    let d = lid % D4;
    var st = DecPartial(NEG_BIG, 0.0, vec4<f32>(0.0));
    for (var c0 = k0; c0 < k1; c0 += WG) {
        let n = min(WG, k1 - c0);
        // The value loads of the thread's first turn go out before the scores: they wait on nothing, and
        // the scores' loads and the max reduction then hide them.
        let vb = (c0 * p.n_kv + r.kvh) * D4 + d;
        var x = load_vals(vb, ks, gi, g, n);
        var s = NEG_BIG;
        if (lid < n) { s = qk_dot(qb, ((c0 + lid) * p.n_kv + r.kvh) * D4) * p.scale; }
        let m_new = max(st.m, wg_max(ln, s));
        var pj = 0.0;
        if (lid < n) { pj = exp(s - m_new); }
        dec_probs[lid] = pj;
        workgroupBarrier();
        // exp(NEG_BIG - m) would overflow the subtraction, so the first chunk sets alpha = 0 directly.
        let alpha = select(exp(st.m - m_new), 0.0, c0 == k0);
        st.m = m_new;
        if (gi < g) {
            var a = vec4<f32>(0.0);
            var l = 0.0;
            for (var j = gi; j < n; j += 16u * g) {  // keys j, j + g, ..., j + 15 g: 16 loads in flight
                if (j != gi) { x = load_vals(vb, ks, j, g, n); }
                a += weigh_vals(x, j, g, n);
                l += weigh_sum(j, g, n);
            }
            st.acc = st.acc * alpha + a;
            st.l = st.l * alpha + l;
        }
        // The next chunk writes dec_probs and the reduction's memory only after the barriers of its
        // max, which every thread reaches after it has finished reading them here.
    }
    dec_acc[lid] = st.acc;
    if (d == 0u && gi < g) { dec_l[gi] = st.l; }
    workgroupBarrier();
    if (lid < D4) {
        var acc = dec_acc[lid];
        var l = dec_l[0];
        for (var i = 1u; i < g; i++) {
            acc += dec_acc[i * D4 + lid];
            l += dec_l[i];
        }
        st.acc = acc;
        st.l = l;
    }
    return st;
}

@compute @workgroup_size(WG)
fn decode(grid: Grid, ln: Lanes) {
    let th = group_index(grid);
    if (th >= p.n_tokens * p.n_heads) { return; }  // uniform per workgroup, so the barriers stay uniform
    let r = row_of(th, step[0]);
    let st = attend_dec(ln, r, r.lo, r.hi);
    if (ln.lid < D4) { out[th * D4 + ln.lid] = select(vec4<f32>(0.0), st.acc / st.l, st.l > 0.0); }
}

@group(0) @binding(5) var<storage, read_write> part: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> part_r: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out_c: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> step_c: array<u32>;

@compute @workgroup_size(WG)
fn split_partial(@builtin(workgroup_id) wid: vec3<u32>, ln: Lanes) {
    let th = wid.x;
    let r = row_of(th, step[0]);
    let k0 = max(r.lo, wid.y * p.split);
    let k1 = min(r.hi, (wid.y + 1u) * p.split);
    if (k0 >= k1) { return; }  // uniform per workgroup
    let st = attend_dec(ln, r, k0, k1);
    let base = (th * p.n_splits + wid.y) * (D4 + 1u);
    if (ln.lid < D4) { part[base + ln.lid] = st.acc; }
    if (ln.lid == 0u) { part[base + D4] = vec4<f32>(st.m, st.l, 0.0, 0.0); }
}

struct SliceShare { acc: vec4<f32>, l: f32 }

// Slice s's sum p v (vec4 d) and l, weighted by exp(m_s - m); 0 at or past s1 (reading slice s1 - 1).
fn slice_share(row0: u32, d: u32, s: u32, s1: u32, m: f32) -> SliceShare {
    let at = row0 + min(s, s1 - 1u) * (D4 + 1u);
    let ml = part_r[at + D4];
    let w = select(0.0, exp(ml.x - m), s < s1);
    return SliceShare(w * part_r[at + d], w * ml.y);
}

@compute @workgroup_size(WG)
fn split_combine(grid: Grid, ln: Lanes) {
    let th = group_index(grid);
    if (th >= p.n_tokens * p.n_heads) { return; }  // uniform per workgroup
    let r = row_of(th, step_c[0]);
    let row0 = th * p.n_splits * (D4 + 1u);
    // The slices that hold keys of [lo, hi): s0 .. s1 - 1, none when the row has no key.
    let s0 = r.lo / p.split;
    let s1 = select(s0, (r.hi + p.split - 1u) / p.split, r.hi > r.lo);

    var mx = NEG_BIG;
    for (var s = s0 + ln.lid; s < s1; s += WG) { mx = max(mx, part_r[row0 + s * (D4 + 1u) + D4].x); }
    let m = wg_max(ln, mx);

    // Thread (slice group gi, vec4 d): slices s0 + gi, s0 + gi + g, ..., four a turn.
    let g = WG / D4;
    let gi = ln.lid / D4;
    let d = ln.lid % D4;
    var acc = vec4<f32>(0.0);
    var l = 0.0;
    if (gi < g) {
        for (var s = s0 + gi; s < s1; s += 4u * g) {
            let a = slice_share(row0, d, s, s1, m);
            let b = slice_share(row0, d, s + g, s1, m);
            let c = slice_share(row0, d, s + 2u * g, s1, m);
            let e = slice_share(row0, d, s + 3u * g, s1, m);
            acc += (a.acc + b.acc) + (c.acc + e.acc);
            l += (a.l + b.l) + (c.l + e.l);
        }
    }
    dec_acc[ln.lid] = acc;
    if (d == 0u && gi < g) { dec_l[gi] = l; }
    workgroupBarrier();
    if (ln.lid < D4) {
        var sum = dec_acc[ln.lid];
        var total = dec_l[0];
        for (var i = 1u; i < g; i++) {
            sum += dec_acc[i * D4 + ln.lid];
            total += dec_l[i];
        }
        out_c[th * D4 + ln.lid] = select(vec4<f32>(0.0), sum / total, total > 0.0);
    }
}
