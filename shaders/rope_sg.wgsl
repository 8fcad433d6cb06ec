// rope_sg: rope.wgsl's `norm_rope` and `norm_rope_append` with the row's sum of squares on subgroup
// operations (lib/reduce_sg.wgsl) instead of workgroup memory. Needs the adapter's `subgroup` feature (this
// module does not compile without it); ops/rope.py takes it where Runtime.subgroup_variant says so.
// Kernels, bindings, params and dispatch: rope.wgsl's header and lib/qk_norm_rope.wgsl.

override WG: u32 = 64u;

// #include "lib/grid.wgsl"

// #include "lib/rope_core.wgsl"

// #include "lib/reduce_sg.wgsl"

// #include "lib/qk_norm_rope.wgsl"
