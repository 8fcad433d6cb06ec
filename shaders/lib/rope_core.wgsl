// What rope.wgsl's entries and lib/qk_norm_rope.wgsl's share: params, bindings 0-4 (and the in-place view
// of binding 1), the range-reduced sin/cos, the MRoPE stream of a pair and the rotation (rope.wgsl's header
// describes them all). The including shader declares `override WG`.

struct Params {
    n_tokens: u32, n_heads: u32, half: u32, pos_stride: u32,
    sec_h: u32, sec_w: u32, mode: u32, b1: u32,
    b2: u32, n_heads2: u32, eps_bits: u32, max_len: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> positions: array<i32>;
@group(0) @binding(3) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
// The in-place entry's view of binding 1 (only `inplace` uses it, only `main` uses `x` and `out`).
@group(0) @binding(1) var<storage, read_write> xio: array<f32>;

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

fn stream(i: u32) -> u32 {
    if (p.mode == 0u) {
        let m = i % 3u;
        if (m == 1u && i < 3u * p.sec_h) { return 1u; }
        if (m == 2u && i < 3u * p.sec_w) { return 2u; }
        return 0u;
    }
    if (i < p.b1) { return 0u; }
    if (i < p.b2) { return 1u; }
    return 2u;
}

// The pair (x0, x1) = (x[i], x[i + D/2]) rotated by the angle whose (sin, cos) is sc.
fn rotate(x0: f32, x1: f32, sc: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(x0 * sc.y - x1 * sc.x, x1 * sc.y + x0 * sc.x);
}
