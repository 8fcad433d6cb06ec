// llama.cpp's q8_0 rule for activations (per block of 32: d = max|x| / 127, q = roundf(x / d), halves away
// from zero): the one code path of quantize_act, of the decode entries that quantize in workgroup memory
// (lib/q8_stage.wgsl) and of the norms that quantize their output (norm.wgsl), so all give the same int8.

// roundf: nearest, halves away from zero; floor(2 * frac) is exact, unlike floor(a + 0.5).
fn round_away(v: vec4<f32>) -> vec4<f32> {
    let a = abs(v);
    let f = floor(a);
    return sign(v) * (f + floor(2.0 * (a - f)));
}

// One block of 32 values quantized by llama.cpp's q8_0 rule: the one code path of quantize_act and of the
// entries that quantize in workgroup memory, so both give the same int8 values.
struct QBlock { q0: vec4<u32>, q1: vec4<u32>, d: f32 }

fn quant_block(v: array<vec4<f32>, 8>) -> QBlock {
    var amax = 0.0;
    for (var i = 0u; i < 8u; i++) {
        let a = abs(v[i]);
        amax = max(amax, max(max(a.x, a.y), max(a.z, a.w)));
    }
    let d = amax / 127.0;
    let id = select(0.0, 1.0 / d, d != 0.0);
    var q: array<u32, 8>;
    for (var i = 0u; i < 8u; i++) {
        q[i] = pack4xI8Clamp(vec4<i32>(round_away(v[i] * id)));
    }
    return QBlock(vec4<u32>(q[0], q[1], q[2], q[3]), vec4<u32>(q[4], q[5], q[6], q[7]), d);
}
