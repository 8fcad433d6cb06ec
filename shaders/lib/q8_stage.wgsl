// Activations quantized by llama.cpp's q8_0 rule (per block of 32: d = max|x| / 127, q = roundf(x / d),
// halves away from zero), and a workgroup-memory copy of a whole quantized x for the decode entries
// that quantize x themselves instead of reading quantize_act's output. quant_block is the one code path of
// both, so they give the same int8 values. The including shader declares `override XB` (blocks the copy
// holds) and includes lib/q8_block.wgsl.

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

