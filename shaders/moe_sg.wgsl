// moe_sg: moe.wgsl's `route` with its max and sum reductions on subgroup operations (lib/reduce_sg.wgsl)
// instead of workgroup memory. Needs the adapter's `subgroup` feature (this module does not compile without
// it); ops/moe.py takes it where Runtime.subgroup_variant says so. Bindings, params and dispatch: moe.wgsl's
// header; the kernel: lib/moe_route.wgsl.

override WG: u32 = 128u;
override E_MAX: u32 = 128u;  // experts held in workgroup memory (a power of two, >= 64 and >= E)
override K_MAX: u32 = 8u;    // kept experts held in workgroup memory (>= K)

// #include "lib/grid.wgsl"

// #include "lib/reduce_sg.wgsl"

// #include "lib/moe_route.wgsl"
