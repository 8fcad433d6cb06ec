// Decode attention's kernel: the online softmax of one query row over a range of cache keys, which the
// single-pass entry `decode` and the split-K pair (lib/attn_decode_entries.wgsl) and the decode entries that
// normalise, rotate and append their own token (lib/attn_decode_rope.wgsl) run. shaders/attention.wgsl
// includes it with lib/reduce.wgsl (reductions in workgroup memory), shaders/attention_sg.wgsl with
// lib/reduce_sg.wgsl (subgroup operations), and attention_rope.wgsl / attention_rope_sg.wgsl likewise, so
// these are the same kernels but for their reductions. The including shader declares `override WG`,
// includes lib/grid.wgsl and lib/attn_params.wgsl, declares cache_k and cache_v ([max_len, n_kv, D] as
// vec4 f32), and defines
//   fn dec_q(qb: u32, n: u32) -> vec4<f32>   vec4 n of the query row whose first vec4 in q is qb.
// D4 = D / 4 is an override constant here (D4 <= WG): these pipelines are built per head dim, so each
// key's D / 4 products are written out in straight-line code and the guards past D4 fold away.
//
// attend_dec, for row r over keys [k0, k1) (a whole row's range, or one slice of it), from a state: no keys
// yet, or one key already weighed in (a decode entry's own new token). Chunks of WG keys: thread i scores
// key i of the chunk (q and the key's row read together), one max reduction gives the chunk's new running
// max, p_j goes to workgroup memory, then WG / D4 key groups each accumulate p_j v_j[d] and p_j for every
// (WG / D4)-th key, 16 keys a turn; the first turn's value loads are issued with the score loads, before the
// reduction. The groups' sums are added once, after the last chunk. At 100 keys and WG = 256 that is one
// chunk, one round of loads (keys and values together), a reduction, one barrier, and the final barrier.

override D4: u32 = 32u;  // D / 4, at most WG

var<workgroup> dec_probs: array<f32, WG>;        // p_j of the chunk's keys
var<workgroup> dec_acc: array<vec4<f32>, WG>;    // each key (or slice) group's sum of p v
var<workgroup> dec_l: array<f32, WG>;            // each group's sum of p (WG / D4 of them)

struct DecPartial { m: f32, l: f32, acc: vec4<f32> }  // running max, sum of p, this thread's vec4 of sum p v

// Products n .. n + 3 of the vec4s of query row qb and key row kb (each the index of its row's first vec4);
// those at or past D4 are 0. With D4 a constant the guards fold away.
fn qk4(qb: u32, kb: u32, n: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    if (n < D4) { r.x = dot(dec_q(qb, n), cache_k[kb + n]); }
    if (n + 1u < D4) { r.y = dot(dec_q(qb, n + 1u), cache_k[kb + n + 1u]); }
    if (n + 2u < D4) { r.z = dot(dec_q(qb, n + 2u), cache_k[kb + n + 2u]); }
    if (n + 3u < D4) { r.w = dot(dec_q(qb, n + 3u), cache_k[kb + n + 3u]); }
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

// The state before any key: attend_dec's `before` for a range with nothing weighed in yet.
fn no_keys() -> DecPartial {
    return DecPartial(NEG_BIG, 0.0, vec4<f32>(0.0));
}

// Online softmax of row r's query over keys [k0, k1), in chunks of WG keys, after the keys `before` holds
// (no_keys(), or a state whose m is every thread's and whose l and acc are in threads lid < D4: key group 0).
// Call in uniform control flow with k0, k1 uniform over the workgroup. The result's acc and l are the whole
// row's in threads lid < D4; m is every thread's.
fn attend_dec(ln: Lanes, r: Row, k0: u32, k1: u32, before: DecPartial) -> DecPartial {
    let lid = ln.lid;
    let qb = r.th * D4;
    let ks = p.n_kv * D4;  // vec4s from one key's row to the next
    let g = WG / D4;       // key groups
    let gi = lid / D4;
    let d = lid % D4;
    var st = before;
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
        // exp(NEG_BIG - m) would overflow the subtraction, so with no key weighed in yet alpha = 0 directly.
        let alpha = select(exp(st.m - m_new), 0.0, st.m == NEG_BIG);
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

// The row's output vec4 (threads lid < D4) from attend_dec's result; 0 for a row with no key.
fn row_out(st: DecPartial) -> vec4<f32> {
    return select(vec4<f32>(0.0), st.acc / st.l, st.l > 0.0);
}
