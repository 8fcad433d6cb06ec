// Activations quantized by llama.cpp's q8_0 rule (per block of 32: d = max|x| / 127, q = roundf(x / d),
// halves away from zero), and a workgroup-memory copy of a whole quantized x for the decode entries
// that quantize x themselves instead of reading quantize_act's output, with lib/q8_quant.wgsl's quant_block
// (so they give the same int8 values). The including shader declares `override XB` (blocks the copy holds)
// and includes lib/q8_block.wgsl.
// #include "lib/q8_quant.wgsl"


var<workgroup> sx_q: array<vec4<u32>, 2u * XB>;  // block b: words 2b, 2b + 1
var<workgroup> sx_d: array<f32, XB>;

fn stage_block(b: u32, v: array<vec4<f32>, 8>) {
    let qb = quant_block(v);
    sx_q[2u * b] = qb.q0;
    sx_q[2u * b + 1u] = qb.q1;
    sx_d[b] = qb.d;
}

// Block b of a weight row (words w0, w1, scale s) against block b of the staged x.
fn staged_block(w0: vec4<u32>, w1: vec4<u32>, s: f32, b: u32) -> f32 {
    return f32(block_dot_i8(w0, w1, sx_q[2u * b], sx_q[2u * b + 1u])) * (s * sx_d[b]);
}

