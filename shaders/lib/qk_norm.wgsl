// Qwen3's per-head QK RMSNorm and the rotation after it, pair by pair of a head row: the one code path of
// rope.wgsl's `norm_rope` / `norm_rope_append` (lib/qk_norm_rope.wgsl) and of the decode attention that
// normalises its own query and key (lib/attn_decode_rope.wgsl), so that both give the same bits.
//
// A row's D/2 pairs are split over NORM_T threads whatever the workgroup's size: thread i < NORM_T takes
// pairs i, i + NORM_T, ..., threads past NORM_T none (WG >= NORM_T). A row's sum of squares is then added in
// the same order in every kernel: past NORM_T the reductions of lib/reduce.wgsl and lib/reduce_sg.wgsl only
// add exact zeros (first-level groups or subgroups of their own), which change no bit of the sum.
//
// The including shader includes lib/rotary.wgsl and one reduction file, declares positions: array<i32> and
// inv_freq, q_norm_w, k_norm_w: array<f32> (rope.wgsl's header says what they hold), and defines
//   fn head_pair(h: HeadRow, i: u32) -> vec2<f32>   elements i and i + D/2 of row h, as they came.

const NORM_T: u32 = 64u;

// A head row: of q (else of k), its token, and where it starts (in the terms of the includer's head_pair).
struct HeadRow { is_q: bool, t: u32, base: u32 }

// The rows' shape: half = D/2, pos_stride = elements from one position stream to the next (T), eps, and
// which stream each pair reads.
struct NormShape { half: u32, pos_stride: u32, eps: f32, sec: Sections }

// Pair i of a head row: the pair, its norm weights and the (sin, cos) of its angle. ok = false past D/2
// and for threads past NORM_T (all zero then).
struct NormPair { ok: bool, x0: f32, x1: f32, w0: f32, w1: f32, sc: vec2<f32> }

fn norm_pair(s: NormShape, h: HeadRow, i: u32) -> NormPair {
    var r: NormPair;
    r.ok = i < s.half;
    if (!r.ok) { return r; }
    let x = head_pair(h, i);
    r.x0 = x.x;
    r.x1 = x.y;
    if (h.is_q) {
        r.w0 = q_norm_w[i];
        r.w1 = q_norm_w[i + s.half];
    } else {
        r.w0 = k_norm_w[i];
        r.w1 = k_norm_w[i + s.half];
    }
    r.sc = sincos(f32(positions[mrope_stream(s.sec, i) * s.pos_stride + h.t]) * inv_freq[i]);
    return r;
}

// Thread lid's first pair, pair lid. Loaded (x, weights, position, inv_freq) and its sin/cos formed before
// the row's one sum reduction, so a row of D <= 2 NORM_T takes one round of loads.
fn first_pair(s: NormShape, h: HeadRow, lid: u32) -> NormPair {
    if (lid >= NORM_T) { return NormPair(); }
    return norm_pair(s, h, lid);
}

// Whether pair i is one of thread lid's: the loop over a thread's pairs is
//   for (var i = lid; owns_pair(s, i, lid); i += NORM_T)
fn owns_pair(s: NormShape, i: u32, lid: u32) -> bool {
    return lid < NORM_T && i < s.half;
}

// 1 / RMS of the row, every thread's: each thread's first pair from registers, its pairs past NORM_T
// re-read (D > 2 NORM_T). Calls wg_sum: the reduction file's rules hold (uniform control flow, a barrier
// between two calls).
fn row_inv_rms(ln: Lanes, s: NormShape, h: HeadRow, first: NormPair) -> f32 {
    var ss = first.x0 * first.x0 + first.x1 * first.x1;
    for (var i = ln.lid + NORM_T; owns_pair(s, i, ln.lid); i += NORM_T) {
        let x = head_pair(h, i);
        ss += x.x * x.x + x.y * x.y;
    }
    return inverseSqrt(wg_sum(ln, ss) / f32(2u * s.half) + s.eps);
}

// Pair i of thread lid (its first, or one past NORM_T read again) normalised by r = 1 / RMS in the order of
// the rmsnorm kernel and of HF's Qwen3RMSNorm, then rotated.
fn normed_rotated(s: NormShape, h: HeadRow, first: NormPair, i: u32, lid: u32, r: f32) -> vec2<f32> {
    var np = first;
    if (i != lid) { np = norm_pair(s, h, i); }
    return rotate((np.x0 * r) * np.w0, (np.x1 * r) * np.w1, np.sc);
}
