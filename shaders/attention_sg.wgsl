// attention_sg: attention.wgsl's decode entries (`decode`, `split_partial`, `split_combine`) with their
// reductions on subgroup operations (lib/reduce_sg.wgsl) instead of workgroup memory. Needs the adapter's
// `subgroup` feature (this module does not compile without it); ops/attention.py takes it where
// Runtime.subgroup_variant says so. Entries, bindings, params and dispatch: lib/attn_decode_entries.wgsl;
// the kernel: lib/attn_decode.wgsl.

override WG: u32 = 256u;

// #include "lib/grid.wgsl"

// #include "lib/attn_common.wgsl"

// #include "lib/reduce_sg.wgsl"

// #include "lib/attn_decode.wgsl"

// #include "lib/attn_decode_entries.wgsl"
