// attention_rope.wgsl's entries `decode` and `decode_q8` (described in its header), as attention_rope.wgsl
// (reductions in workgroup memory) and attention_rope_sg.wgsl (subgroup operations) include them after
// lib/grid.wgsl, lib/attn_params.wgsl, a reduction file, lib/rotary.wgsl, lib/qk_norm.wgsl,
// lib/q8_quant.wgsl and lib/attn_decode.wgsl. The cache is bound read_write: one workgroup a kv head appends
// the new token's row to it while the others attend over the rows before it.

@group(0) @binding(1) var<storage, read> q_new: array<f32>;
@group(0) @binding(2) var<storage, read_write> cache_k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> cache_v: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> k_new: array<f32>;
@group(0) @binding(7) var<storage, read> v_new: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> positions: array<i32>;
@group(0) @binding(9) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(10) var<storage, read> q_norm_w: array<f32>;
@group(0) @binding(11) var<storage, read> k_norm_w: array<f32>;
@group(0) @binding(12) var<storage, read_write> out_q: array<u32>;
@group(0) @binding(13) var<storage, read_write> out_d: array<f32>;

// The row's query and its kv head's new key, normed and rotated; after attend_dec, dec_qn holds the row's
// output for its Q8_0 blocks (decode_q8).
var<workgroup> dec_qn: array<vec4<f32>, D4>;
var<workgroup> dec_kn: array<vec4<f32>, D4>;

fn dec_q(qb: u32, n: u32) -> vec4<f32> {
    return dec_qn[n];
}

fn head_pair(h: HeadRow, i: u32) -> vec2<f32> {
    let half = 2u * D4;
    if (h.is_q) { return vec2<f32>(q_new[h.base + i], q_new[h.base + i + half]); }
    return vec2<f32>(k_new[h.base + i], k_new[h.base + i + half]);
}

// Query row th of the one new token at position pos = step[0]: its q head and its kv head's k normed and
// rotated into workgroup memory, the kv head's first query head appending k and v to cache row pos (none
// past max_len, as kv_append drops them), then attend_dec over cache rows [lo, pos) from the state of the
// new key alone (p = exp(0) = 1, weighed into key group 0), since no other workgroup's row pos is
// visible in this dispatch. Call in uniform control flow (th uniform).
fn attend_new(ln: Lanes, th: u32) -> DecPartial {
    let pos = step[0];
    let r = row_of(th, pos);
    let s = NormShape(2u * D4, 1u, bitcast<f32>(p.eps_bits), Sections(0u, p.sec_h, p.sec_w, 0u, 0u));
    let hq = HeadRow(true, 0u, th * 4u * D4);
    let hk = HeadRow(false, 0u, r.kvh * 4u * D4);
    let fq = first_pair(s, hq, ln.lid);
    let fk = first_pair(s, hk, ln.lid);
    let rq = row_inv_rms(ln, s, hq, fq);
    workgroupBarrier();  // lib/reduce_sg.wgsl's wg_sum reuses its slots
    let rk = row_inv_rms(ln, s, hk, fk);
    // Each thread writes components of its pairs; the vec4s are read whole after the barrier.
    for (var i = ln.lid; owns_pair(s, i, ln.lid); i += NORM_T) {
        let a = normed_rotated(s, hq, fq, i, ln.lid, rq);
        let b = normed_rotated(s, hk, fk, i, ln.lid, rk);
        let j = i + s.half;
        dec_qn[i / 4u][i % 4u] = a.x;
        dec_qn[j / 4u][j % 4u] = a.y;
        dec_kn[i / 4u][i % 4u] = b.x;
        dec_kn[j / 4u][j % 4u] = b.y;
    }
    workgroupBarrier();
    var before = no_keys();
    let has_new = pos < p.max_len;  // uniform
    if (has_new) {
        var sa = vec4<f32>(0.0);
        for (var n = 0u; n < D4; n++) { sa += dec_qn[n] * dec_kn[n]; }
        before.m = dot(sa, vec4<f32>(1.0)) * p.scale;
        if (ln.lid < D4) {
            let v = v_new[r.kvh * D4 + ln.lid];
            before.l = 1.0;
            before.acc = v;
            if (th % (p.n_heads / p.n_kv) == 0u) {
                let row = (pos * p.n_kv + r.kvh) * D4 + ln.lid;
                cache_k[row] = dec_kn[ln.lid];
                cache_v[row] = v;
            }
        }
    }
    return attend_dec(ln, r, r.lo, select(r.hi, pos, has_new), before);
}

@compute @workgroup_size(WG)
fn decode(grid: Grid, ln: Lanes) {
    let th = group_index(grid);
    if (th >= p.n_heads) { return; }  // uniform per workgroup, so the barriers stay uniform
    let o = row_out(attend_new(ln, th));
    if (ln.lid < D4) { out[th * D4 + ln.lid] = o; }
}

@compute @workgroup_size(WG)
fn decode_q8(grid: Grid, ln: Lanes) {
    let th = group_index(grid);
    if (th >= p.n_heads) { return; }  // uniform per workgroup
    let o = row_out(attend_new(ln, th));
    if (ln.lid < D4) {
        out[th * D4 + ln.lid] = o;
        dec_qn[ln.lid] = o;  // attend_dec has read the query for the last time before its final barrier
    }
    workgroupBarrier();
    let b = ln.lid;  // block b of the row: vec4s 8b .. 8b + 7
    if (b < D4 / 8u) {
        let v = 8u * b;
        let qb = quant_block(array<vec4<f32>, 8>(dec_qn[v], dec_qn[v + 1u], dec_qn[v + 2u], dec_qn[v + 3u],
                                                 dec_qn[v + 4u], dec_qn[v + 5u], dec_qn[v + 6u], dec_qn[v + 7u]));
        let w = th * D4 + v;  // D4 words (four int8 each) a row
        out_q[w] = qb.q0.x;
        out_q[w + 1u] = qb.q0.y;
        out_q[w + 2u] = qb.q0.z;
        out_q[w + 3u] = qb.q0.w;
        out_q[w + 4u] = qb.q1.x;
        out_q[w + 5u] = qb.q1.y;
        out_q[w + 6u] = qb.q1.z;
        out_q[w + 7u] = qb.q1.w;
        out_d[th * (D4 / 8u) + b] = qb.d;
    }
}
