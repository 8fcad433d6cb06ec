// attention_rope: the single-pass decode attention of one new token (attention.wgsl's `decode`) that also
// does what rope.wgsl's `norm_rope_append` did before it in a dispatch of its own: Qwen3's per-head QK
// RMSNorm, the rotary embedding (plain, or interleaved MRoPE) and the KV-cache append. Decode is bound by
// its dispatches' count and latency, not by bytes (an H200 spends ~8 us on that dispatch however little it
// does). attention_rope_sg.wgsl is the same on subgroup operations.
//
// Entry `decode`: out[h] = softmax_j(scale * q'[h] . k'[j, g]) v[j, g] over keys j = lo .. pos of kv head
//   g = h / (Hq / n_kv), with pos = step[0] and lo as attention.wgsl's `main` (window), where q' and k' of
//   the new token are q_new and k_new normed by q_norm / k_norm and rotated at their positions exactly as
//   `norm_rope` computes them (lib/qk_norm.wgsl: the same bits), and the keys before pos come from the
//   cache. Each workgroup normalises its own query head and its kv head's new key; the kv head's first query
//   head's workgroup writes k' and v_new to cache row pos (dropped at or past max_len, and then not
//   attended, as kv_append and `decode` do), and every workgroup weighs the new key from its own copy, since
//   the cache row is not visible to the other workgroups of the dispatch. The cache must already hold rows
//   lo .. pos - 1.
//   Bindings: 0 params; 1 q_new: [Hq, D] f32; 2 cache_k, 3 cache_v: [max_len, n_kv, D] f32 (read_write);
//             4 step: [4] u32; 5 out: [Hq, D] f32; 6 k_new: [n_kv, D] f32; 7 v_new: [n_kv, D] f32;
//             8 positions: [S, 1] i32 (S = 1 plain RoPE, 3 MRoPE: temporal, height, width);
//             9 inv_freq: [D/2] f32; 10 q_norm weight [D]; 11 k_norm weight [D].
//   Params:   attention.wgsl's (n_tokens = 1, n_heads = Hq, n_kv, d4, max_len, window, scale), with sec_h,
//             sec_w (interleaved MRoPE sections 1 and 2; 0 and 0 is plain RoPE) and eps (f32 bits).
//   Dispatch: one workgroup of WG threads per query head, flat index (groups_for). WG >= 64 (lib/qk_norm.wgsl's
//             NORM_T threads take a row's pairs) and D4 = D / 4 <= WG (override, as lib/attn_decode.wgsl's).
//   Chain: the two rows' loads and sin/cos, two sum reductions, a barrier, the new key's score and the
//   cache row, then lib/attn_decode.wgsl's attention over the keys before pos.
//
// Entry `decode_q8`: `decode` that also writes out as o_proj's Q8_0 activations, the blocks quantize_act
//   (q8_0.wgsl) makes of out, bit for bit (lib/q8_quant.wgsl's quant_block), so the int8 matvec needs no
//   quantize pass: a workgroup holds its head's D values, D / 32 whole blocks. Bindings as `decode`, plus
//   12 out_q: [Hq * D / 4] u32 (int8 x4), 13 out_d: [Hq * D / 32] f32. D % 32 == 0.

override WG: u32 = 256u;

// #include "lib/grid.wgsl"

// #include "lib/attn_params.wgsl"

// #include "lib/reduce.wgsl"

// #include "lib/rotary.wgsl"

// #include "lib/qk_norm.wgsl"

// #include "lib/q8_quant.wgsl"

// #include "lib/attn_decode.wgsl"

// #include "lib/attn_decode_rope.wgsl"
