// exp(x) to about 1.3 ulp over all f32. WGSL's exp has implementation-defined precision that grows with
// |x|: x = k ln2 + r with |r| <= ln2/2 (Cody-Waite, exact first step), degree-7 Taylor for exp(r)
// (truncation 5e-9 relative), then scale by 2^k.

const EXP_HI: f32 = 88.72283;    // largest x with exp(x) finite in f32
const EXP_LO: f32 = -87.33654;   // below this exp(x) is subnormal; return 0
const LOG2E: f32 = 1.4426950409;
const LN2_HI: f32 = 0.693145751953125;  // 15 significant bits: k * LN2_HI is exact for |k| <= 256
const LN2_LO: f32 = 1.4286068203e-6;    // ln 2 - LN2_HI

fn exp_f32(x_in: f32) -> f32 {
    let v = clamp(x_in, EXP_LO, EXP_HI);
    let k = round(v * LOG2E);
    let r = (v - k * LN2_HI) - k * LN2_LO;
    var q = 1.0 / 5040.0;
    q = q * r + 1.0 / 720.0;
    q = q * r + 1.0 / 120.0;
    q = q * r + 1.0 / 24.0;
    q = q * r + 1.0 / 6.0;
    q = q * r + 0.5;
    q = q * r + 1.0;
    q = q * r + 1.0;
    return select(ldexp(q, i32(k)), 0.0, x_in < EXP_LO);
}
