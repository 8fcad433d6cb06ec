// llama.cpp's q8_0 rule for activations (per block of 32: d = max|x| / 127, q = roundf(x / d), halves away
// from zero): the one code path of quantize_act, of the decode entries that quantize in workgroup memory
// (lib/q8_stage.wgsl), of the norms that quantize their output (norm.wgsl) and of the routed Q8_0 experts'
// gate_up that quantizes its act (lib/moe_routed.wgsl), so all give the same int8.

// roundf: nearest, halves away from zero; floor(2 * frac) is exact, unlike floor(a + 0.5).
fn round_away(v: vec4<f32>) -> vec4<f32> {
    let a = abs(v);
    let f = floor(a);
    return sign(v) * (f + floor(2.0 * (a - f)));
}

// One block of 32 values quantized by llama.cpp's q8_0 rule: the one code path of quantize_act and of the
// entries that quantize in workgroup memory, so both give the same int8 values. Written out, not looped:
// naga emits a WGSL loop as a while loop, which drivers do not unroll, and a loop over v or q puts the
// array in local memory (on an H200 that made every Q8_0 activation quantization several times slower).
// Callers build v the same way (an array constructor of eight loads, not a loop).
struct QBlock { q0: vec4<u32>, q1: vec4<u32>, d: f32 }

fn quant4(v: vec4<f32>, id: f32) -> u32 {
    return pack4xI8Clamp(vec4<i32>(round_away(v * id)));
}

fn quant_block(v: array<vec4<f32>, 8>) -> QBlock {
    let a = max(max(max(abs(v[0]), abs(v[1])), max(abs(v[2]), abs(v[3]))),
                max(max(abs(v[4]), abs(v[5])), max(abs(v[6]), abs(v[7]))));
    let d = max(max(a.x, a.y), max(a.z, a.w)) / 127.0;
    let id = select(0.0, 1.0 / d, d != 0.0);
    return QBlock(vec4<u32>(quant4(v[0], id), quant4(v[1], id), quant4(v[2], id), quant4(v[3], id)),
                  vec4<u32>(quant4(v[4], id), quant4(v[5], id), quant4(v[6], id), quant4(v[7], id)), d);
}
