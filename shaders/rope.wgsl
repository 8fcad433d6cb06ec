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
// Entries `norm_rope` and `norm_rope_append` (lib/qk_norm_rope.wgsl; rope_sg.wgsl builds them on subgroup
// operations): `norm_rope` is Qwen3's per-head QK RMSNorm followed by this rotation, for q and k in one
//   dispatch (decode spends its time on dispatches). Bindings: 0 params; 1 q: [T, H, D] f32 in place;
//   2 positions; 3 inv_freq; 4 k: [T, H2, D] f32 in place; 5 q_norm weight [D]; 6 k_norm weight [D].
//   Params as above plus n_heads2 = H2 and eps (f32 bits). Normalisation is (x * inverseSqrt(mean(x^2)
//   + eps)) * w, in the order of the rmsnorm kernel and of HF's Qwen3RMSNorm.
//   Dispatch: one workgroup per head row, T * H + T * H2 of them (groups_for); WG >= 64: thread i < 64
//   takes pairs i, i + 64, ... (lib/qk_norm.wgsl's NORM_T, the split every kernel that normalises a head
//   row shares, so they give the same bits). Every load of a thread's first pair (x, weights, position,
//   inv_freq) and its sin/cos come before the row's one sum reduction, so a row of D <= 128 takes one round
//   of loads.
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

// #include "lib/grid.wgsl"

// #include "lib/rope_core.wgsl"

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

// The QK-norm entries, with their reduction in workgroup memory.
// #include "lib/reduce.wgsl"

// #include "lib/qk_norm_rope.wgsl"
