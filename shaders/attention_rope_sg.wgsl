// attention_rope_sg: attention_rope.wgsl's entries `decode` and `decode_q8` with their reductions on subgroup
// operations (lib/reduce_sg.wgsl) instead of workgroup memory. Needs the adapter's `subgroup` feature (this
// module does not compile without it); ops/attention.py takes it where Runtime.subgroup_variant says so.
// Entries, bindings, params and dispatch: attention_rope.wgsl's header.

override WG: u32 = 256u;

// #include "lib/grid.wgsl"

// #include "lib/attn_params.wgsl"

// #include "lib/reduce_sg.wgsl"

// #include "lib/rotary.wgsl"

// #include "lib/qk_norm.wgsl"

// #include "lib/q8_quant.wgsl"

// #include "lib/attn_decode.wgsl"

// #include "lib/attn_decode_rope.wgsl"
