// The rotary embedding's math, with no bindings: the range-reduced sin/cos, the MRoPE stream of a pair and
// the rotation (shaders/rope.wgsl's header describes them). lib/rope_core.wgsl (rope.wgsl's entries) and
// shaders/attention_rope.wgsl (the decode attention that rotates its own query and key) both build on it.

const TWO_OVER_PI: f32 = 0x1.45f306p-1f;
// pi/2 = PIO2_1 + PIO2_2 + PIO2_3 + PIO2_4 to about 2^-55; the first three have 8 significant bits.
const PIO2_1: f32 = 0x1.92p0f;
const PIO2_2: f32 = 0x1.fap-12f;
const PIO2_3: f32 = 0x1.54p-20f;
const PIO2_4: f32 = 0x1.10b462p-30f;

// Cephes sinf / cosf minimax coefficients for |r| <= pi/4.
const S1: f32 = -1.6666654611e-1;
const S2: f32 = 8.3321608736e-3;
const S3: f32 = -1.9515295891e-4;
const C1: f32 = 4.166664568298827e-2;
const C2: f32 = -1.388731625493765e-3;
const C3: f32 = 2.443315711809948e-5;

// (sin(a), cos(a)) of an f32 angle.
fn sincos(a: f32) -> vec2<f32> {
    let k = round(a * TWO_OVER_PI);
    var r = a - k * PIO2_1;
    r = r - k * PIO2_2;
    r = r - k * PIO2_3;
    r = r - k * PIO2_4;
    let z = r * r;
    let s = r + r * z * (S1 + z * (S2 + z * S3));
    let c = 1.0 - 0.5 * z + z * z * (C1 + z * (C2 + z * C3));
    let q = u32(i32(k)) & 3u;  // quadrant; two's complement keeps it right for negative k
    var sc: vec2<f32>;
    switch q {
        case 0u: { sc = vec2<f32>(s, c); }
        case 1u: { sc = vec2<f32>(c, -s); }
        case 2u: { sc = vec2<f32>(-s, -c); }
        default: { sc = vec2<f32>(-c, s); }
    }
    return sc;
}

// Which position streams the pairs read: rope.wgsl's params mode, sec_h, sec_w, b1, b2.
struct Sections { mode: u32, sec_h: u32, sec_w: u32, b1: u32, b2: u32 }

// The position stream (temporal 0, height 1, width 2) of pair i.
fn mrope_stream(s: Sections, i: u32) -> u32 {
    if (s.mode == 0u) {
        let m = i % 3u;
        if (m == 1u && i < 3u * s.sec_h) { return 1u; }
        if (m == 2u && i < 3u * s.sec_w) { return 2u; }
        return 0u;
    }
    if (i < s.b1) { return 0u; }
    if (i < s.b2) { return 1u; }
    return 2u;
}

// The pair (x0, x1) = (x[i], x[i + D/2]) rotated by the angle whose (sin, cos) is sc.
fn rotate(x0: f32, x1: f32, sc: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(x0 * sc.y - x1 * sc.x, x1 * sc.y + x0 * sc.x);
}
