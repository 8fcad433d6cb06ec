// silu(x) = x * sigmoid(x) with our exp (lib/exp.wgsl): elementwise's `silu` and the MoE experts' fused
// SwiGLU must be the same function.
// #include "lib/exp.wgsl"

// Where exp(-x) would overflow, sigmoid(x) < 1e-38 and the product is 0 in f32.
fn silu(v: f32) -> f32 {
    return select(v / (1.0 + exp_f32(-v)), 0.0 * v, -v > EXP_HI);
}
