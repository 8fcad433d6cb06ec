// Decode attention's entries over a cache already appended to: the single-pass `decode` and the split-K
// pair `split_partial` + `split_combine`, on lib/attn_decode.wgsl's kernel. shaders/attention.wgsl and
// shaders/attention_sg.wgsl include this file after lib/attn_common.wgsl (q and the cache read-only) and
// lib/attn_decode.wgsl. Params, bindings, masking and the output are those of attention.wgsl's `main`.
//
// Entry `decode`: `main` for decode rows, with more threads and a shorter chain a chunk (attend_dec over
//   the row's whole range). Dispatch: one workgroup of WG threads per row t * Hq + h, flat index (groups_for).
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

@compute @workgroup_size(WG)
fn decode(grid: Grid, ln: Lanes) {
    let th = group_index(grid);
    if (th >= p.n_tokens * p.n_heads) { return; }  // uniform per workgroup, so the barriers stay uniform
    let r = row_of(th, step[0]);
    let o = row_out(attend_dec(ln, r, r.lo, r.hi, no_keys()));
    if (ln.lid < D4) { out[th * D4 + ln.lid] = o; }
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
    let st = attend_dec(ln, r, k0, k1, no_keys());
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
