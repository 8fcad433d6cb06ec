// moe_sg: moe.wgsl's `route` and routed gate_up entries (gate_up_routed, gate_up_q8_routed) with the route's
// max and sum reductions on subgroup operations (lib/reduce_sg.wgsl) instead of workgroup memory. Needs the
// adapter's `subgroup` feature (this module does not compile without it); ops/moe.py takes it where
// Runtime.subgroup_variant says so. Bindings, params and dispatch: moe.wgsl's header; the kernels:
// lib/moe_route.wgsl, lib/moe_routed.wgsl.

override WG: u32 = 128u;
override E_MAX: u32 = 128u;  // experts held in workgroup memory (a power of two, >= 64 and >= E)
override K_MAX: u32 = 8u;    // kept experts held in workgroup memory (>= K)
override TPR: u32 = 16u;     // routed entries: threads per output row, a power of two dividing WG
override WTYPE: u32 = 2u;    // gate_up_routed: 0 f32, 1 f16, 2 bf16
override VEC: bool = true;   // gate_up_routed: 16-byte weight words (moe.wgsl's header)

// #include "lib/grid.wgsl"

// #include "lib/reduce_sg.wgsl"

// #include "lib/moe_routed.wgsl"
