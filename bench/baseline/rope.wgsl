// FROZEN BASELINE for bench/kernels.py --decode (old-vs-new decode latency, issue 16): shaders/rope.wgsl as of
// commit fdecbea, before the decode kernels were reworked. Not a kernel of the package (ops never load it;
// the registry lists shaders/ only). Delete once the H200 numbers are in.
//
// rope: rotary position embedding in HF's rotate_half ("neox") layout, plain and multimodal (MRoPE).
//
//   angle  = f32(position) * inv_freq[i]                    (one f32 product, as torch computes freqs)
//   out[i]        = x[i] * cos(angle) - x[i + D/2] * sin(angle)
//   out[i + D/2]  = x[i + D/2] * cos(angle) + x[i] * sin(angle)        for i < D/2
//
// Bindings (entry `main`):    0 params; 1 x: [T, H, D] f32; 2 positions: [S, T] i32; 3 inv_freq: [D/2] f32;
//                             4 out: [T, H, D] f32.
// Bindings (entry `inplace`): 0 params; 1 x: [T, H, D] f32, rotated in place; 2 positions; 3 inv_freq.
// Params:   n_tokens = T, n_heads = H, half = D/2, pos_stride = T (elements between position streams),
//           sec_h, sec_w, mode, b1, b2: which of the S position streams (temporal 0, height 1, width 2)
//           pair i reads:
//             mode 0 (interleaved MRoPE, Qwen3-Omni / Qwen3-VL): height if i % 3 == 1 and i < 3 * sec_h,
//               width if i % 3 == 2 and i < 3 * sec_w, else temporal. Plain RoPE is sec_h = sec_w = 0.
//             mode 1 (contiguous MRoPE, Qwen2-VL / Qwen2.5-Omni): temporal for i < b1, height for i < b2,
//               else width.
// Dispatch: one thread per (token, head, pair) = T * H * D/2 threads in workgroups of WG, flat workgroup
//           index wid.x + wid.y * nwg.x (groups_for); threads past the end return.
//
// Entry `norm_rope`: Qwen3's per-head QK RMSNorm followed by this rotation, for q and k in one dispatch
//   (decode spends its time on dispatches). Bindings: 0 params; 1 q: [T, H, D] f32 in place;
//   2 positions; 3 inv_freq; 4 k: [T, H2, D] f32 in place; 5 q_norm weight [D]; 6 k_norm weight [D].
//   Params as above plus n_heads2 = H2 and eps (f32 bits). Normalisation is (x * inverseSqrt(mean(x^2)
//   + eps)) * w, in the order of the rmsnorm kernel and of HF's Qwen3RMSNorm.
//   Dispatch: one workgroup per head row, T * H + T * H2 of them (groups_for); threads loop over pairs.
//
// Entry `norm_rope_append`: `norm_rope` that writes the rotated k rows, and the v rows as they are, to the
//   KV cache at rows start + t (start = step[0], read on the GPU; rows at or past max_len are dropped), in
//   place of a kv_append dispatch; k itself is left as it came. Bindings as `norm_rope`, plus 7 v: [T, H2,
//   D] f32; 8 cache_k, 9 cache_v: [max_len, H2, D] f32; 10 step: [4] u32. Params as `norm_rope` plus
//   max_len. Dispatch: T * H + 2 * T * H2 workgroups (the last T * H2 copy the v rows).
//
// Precision: WGSL's sin/cos are implementation-defined and lose digits on large angles on some drivers
// (angles reach 4e4 rad at position 40k). We reduce the f32 angle by multiples of pi/2 (Cody-Waite, pi/2
// split into three 8-bit pieces and a 24-bit tail, so k * piece is exact for |k| < 2^16, i.e. angles up
// to about 1e5) and evaluate Cephes' single-precision minimax polynomials on [-pi/4, pi/4]. The result
// matches a correctly rounded cos/sin of the same f32 angle to about 1e-7 absolute.

override WG: u32 = 64u;

struct Params {
    n_tokens: u32, n_heads: u32, half: u32, pos_stride: u32,
    sec_h: u32, sec_w: u32, mode: u32, b1: u32,
    b2: u32, n_heads2: u32, eps_bits: u32, max_len: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> positions: array<i32>;
@group(0) @binding(3) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
// The in-place entry's view of binding 1 (only `inplace` uses it, only `main` uses `x` and `out`).
@group(0) @binding(1) var<storage, read_write> xio: array<f32>;

const TWO_OVER_PI: f32 = 0x1.45f306p-1f;
// pi/2 = PIO2_1 + PIO2_2 + PIO2_3 + PIO2_4 to about 2^-55; the first three have 8 significant bits.
const PIO2_1: f32 = 0x1.92p0f;
const PIO2_2: f32 = 0x1.fap-12f;
const PIO2_3: f32 = 0x1.54p-20f;
const PIO2_4: f32 = 0x1.10b462p-30f;

// Cephes sinf / cosf minimax coefficients for |r| <= pi/4.
const S1: f32 = -1.6666654611e-1;
const S2: f32 = 8.3321608736e-3;
const S3: f32 = -1.9515295891e-4;
const C1: f32 = 4.166664568298827e-2;
const C2: f32 = -1.388731625493765e-3;
const C3: f32 = 2.443315711809948e-5;

// (sin(a), cos(a)) of an f32 angle.
fn sincos(a: f32) -> vec2<f32> {
    let k = round(a * TWO_OVER_PI);
    var r = a - k * PIO2_1;
    r = r - k * PIO2_2;
    r = r - k * PIO2_3;
    r = r - k * PIO2_4;
    let z = r * r;
    let s = r + r * z * (S1 + z * (S2 + z * S3));
    let c = 1.0 - 0.5 * z + z * z * (C1 + z * (C2 + z * C3));
    let q = u32(i32(k)) & 3u;  // quadrant; two's complement keeps it right for negative k
    var sc: vec2<f32>;
    switch q {
        case 0u: { sc = vec2<f32>(s, c); }
        case 1u: { sc = vec2<f32>(c, -s); }
        case 2u: { sc = vec2<f32>(-s, -c); }
        default: { sc = vec2<f32>(-c, s); }
    }
    return sc;
}

fn stream(i: u32) -> u32 {
    if (p.mode == 0u) {
        let m = i % 3u;
        if (m == 1u && i < 3u * p.sec_h) { return 1u; }
        if (m == 2u && i < 3u * p.sec_w) { return 2u; }
        return 0u;
    }
    if (i < p.b1) { return 0u; }
    if (i < p.b2) { return 1u; }
    return 2u;
}

struct Pair { lo: u32, i: u32, sc: vec2<f32>, ok: bool }

// Which element pair thread g rotates, and by how much.
fn pair(g: u32) -> Pair {
    var r: Pair;
    r.ok = g < p.n_tokens * p.n_heads * p.half;
    if (!r.ok) { return r; }
    r.i = g % p.half;
    let th = g / p.half;  // token * H + head
    let t = th / p.n_heads;
    r.lo = th * 2u * p.half + r.i;
    let pos = positions[stream(r.i) * p.pos_stride + t];
    r.sc = sincos(f32(pos) * inv_freq[r.i]);
    return r;
}

// The pair (x0, x1) = (x[i], x[i + D/2]) rotated by the angle whose (sin, cos) is sc.
fn rotate(x0: f32, x1: f32, sc: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(x0 * sc.y - x1 * sc.x, x1 * sc.y + x0 * sc.x);
}

// #include "lib/rows.wgsl"

@compute @workgroup_size(WG)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let r = pair(group_index(grid) * WG + lid);
    if (!r.ok) { return; }
    let o = rotate(x[r.lo], x[r.lo + p.half], r.sc);
    out[r.lo] = o.x;
    out[r.lo + p.half] = o.y;
}

@compute @workgroup_size(WG)
fn inplace(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let r = pair(group_index(grid) * WG + lid);
    if (!r.ok) { return; }
    let o = rotate(xio[r.lo], xio[r.lo + p.half], r.sc);
    xio[r.lo] = o.x;
    xio[r.lo + p.half] = o.y;
}

@group(0) @binding(5) var<storage, read> q_norm_w: array<f32>;
@group(0) @binding(6) var<storage, read> k_norm_w: array<f32>;

// 1 / RMS of head row `base` of q (xio) or k (out), for every thread of the workgroup.
fn head_rms(lid: u32, is_q: bool, base: u32) -> f32 {
    var ss = 0.0;
    for (var i = lid; i < p.half; i += WG) {
        let x0 = select(out[base + i], xio[base + i], is_q);
        let x1 = select(out[base + i + p.half], xio[base + i + p.half], is_q);
        ss += x0 * x0 + x1 * x1;
    }
    return inverseSqrt(row_sum(lid, WG, ss) / f32(2u * p.half) + bitcast<f32>(p.eps_bits));
}

@compute @workgroup_size(WG)
fn norm_rope(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let row = group_index(grid);
    let n_q = p.n_tokens * p.n_heads;
    if (row >= n_q + p.n_tokens * p.n_heads2) { return; }  // uniform per workgroup
    let is_q = row < n_q;  // uniform per workgroup
    let t = select((row - n_q) / p.n_heads2, row / p.n_heads, is_q);
    let base = select(row - n_q, row, is_q) * 2u * p.half;
    let r = head_rms(lid, is_q, base);
    for (var i = lid; i < p.half; i += WG) {
        let sc = sincos(f32(positions[stream(i) * p.pos_stride + t]) * inv_freq[i]);
        if (is_q) {
            let o = rotate((xio[base + i] * r) * q_norm_w[i], (xio[base + i + p.half] * r) * q_norm_w[i + p.half], sc);
            xio[base + i] = o.x;
            xio[base + i + p.half] = o.y;
        } else {
            let o = rotate((out[base + i] * r) * k_norm_w[i], (out[base + i + p.half] * r) * k_norm_w[i + p.half], sc);
            out[base + i] = o.x;
            out[base + i + p.half] = o.y;
        }
    }
}

@group(0) @binding(7) var<storage, read> v_new: array<f32>;
@group(0) @binding(8) var<storage, read_write> cache_k: array<f32>;
@group(0) @binding(9) var<storage, read_write> cache_v: array<f32>;
@group(0) @binding(10) var<storage, read> step: array<u32>;

@compute @workgroup_size(WG)
fn norm_rope_append(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let row = group_index(grid);
    let n_q = p.n_tokens * p.n_heads;
    let n_k = p.n_tokens * p.n_heads2;
    if (row >= n_q + 2u * n_k) { return; }  // uniform per workgroup
    let d = 2u * p.half;
    if (row >= n_q + n_k) {  // a v row, copied (uniform per workgroup: no barrier on this path)
        let kv_row = row - n_q - n_k;  // token * H2 + head
        let dst = step[0] + kv_row / p.n_heads2;
        if (dst < p.max_len) {
            let o = (dst * p.n_heads2 + kv_row % p.n_heads2) * d;
            for (var i = lid; i < d; i += WG) { cache_v[o + i] = v_new[kv_row * d + i]; }
        }
        return;
    }
    let is_q = row < n_q;  // uniform per workgroup
    let t = select((row - n_q) / p.n_heads2, row / p.n_heads, is_q);
    let base = select(row - n_q, row, is_q) * d;
    let r = head_rms(lid, is_q, base);
    let dst = step[0] + t;
    let cache_base = (dst * p.n_heads2 + (row - n_q) % p.n_heads2) * d;
    for (var i = lid; i < p.half; i += WG) {
        let sc = sincos(f32(positions[stream(i) * p.pos_stride + t]) * inv_freq[i]);
        if (is_q) {
            let o = rotate((xio[base + i] * r) * q_norm_w[i], (xio[base + i + p.half] * r) * q_norm_w[i + p.half], sc);
            xio[base + i] = o.x;
            xio[base + i + p.half] = o.y;
        } else if (dst < p.max_len) {
            let o = rotate((out[base + i] * r) * k_norm_w[i], (out[base + i + p.half] * r) * k_norm_w[i + p.half], sc);
            cache_k[cache_base + i] = o.x;
            cache_k[cache_base + i + p.half] = o.y;
        }
    }
}
