// snake: SnakeBeta as Transformers' Qwen3OmniMoeSnakeBeta computes it, on channels-first f32 [C, T]:
//   y[c, t] = x + 1 / (exp(beta[c]) + 1e-9) * sin(x * exp(alpha[c]))^2
// alpha and beta are log-scale, one per channel. y may be x (in place).
//
// y may also be the activation of x[:, start:] ([C, T - start], T_in = x's row length): code2wav's crop
// of a decode's left context.
//
// Bindings: 0 params; 1 x: f32 window; 2 alpha: [C] f32; 3 beta: [C] f32; 4 y: f32 window.
//   A window starts at an aligned offset at or before the piece's first element; x_off and y_off are that
//   element's index within it (ops/pieces.py). x and y are read_write so that y may be x.
// Params (sizes in elements): n = elements of this piece; t = y's row length (for the channel of an
//   element); e0 = index in y of the piece's first element; x_off, y_off; t_in = x's row length; start;
//   x0 = index in x of the element under y's e0 (x's window starts x_off before it).
// Dispatch: ceil(n / WG) workgroups of WG threads, one element per thread, flat workgroup index
//   wid.x + wid.y * nwg.x (groups_for).
// WGSL's exp and sin have implementation-defined precision (Vulkan allows 2^-11 absolute error for sin
// on [-pi, pi]), so both are ours: exp from lib/exp.wgsl, sin^2 below.

override WG: u32 = 256;

const NO_DIV_BY_ZERO: f32 = 1e-9;  // Qwen3OmniMoeSnakeBeta.no_div_by_zero

struct Params { n: u32, t: u32, e0: u32, x_off: u32, y_off: u32, t_in: u32, start: u32, x0: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> alpha: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

// #include "lib/grid.wgsl"

// #include "lib/exp.wgsl"

// sin(u)^2. u = n pi/2 + r, |r| <= pi/4, with pi/2 split in three (Cody-Waite): n PIO2_A is exact for
// |n| < 2^16 and n PIO2_B for |n| < 2^12 (|u| < 6400), past which the reduction error grows like n 2^-24 PIO2_B.
// sin(r) by Cephes' sinf polynomial (about 1 ulp on [-pi/4, pi/4]); for odd n, sin(u)^2 = cos(r)^2 = 1 - sin(r)^2,
// which is at least 1/2 there, so the subtraction loses nothing.
const TWO_OVER_PI: f32 = 0.6366197723675814;
const PIO2_A: f32 = 1.5703125;                // 8 significant bits
const PIO2_B: f32 = 4.838705062866211e-4;     // 12 significant bits
const PIO2_C: f32 = -4.371138828673793e-8;    // pi/2 - PIO2_A - PIO2_B, rounded

fn sin2(u: f32) -> f32 {
    let n = round(u * TWO_OVER_PI);
    let r = ((u - n * PIO2_A) - n * PIO2_B) - n * PIO2_C;
    let z = r * r;
    var q = -1.9515295891e-4;
    q = q * z + 8.3321608736e-3;
    q = q * z - 1.6666654611e-1;
    let s = r + r * z * q;
    let s2 = s * s;
    let odd = (i32(n) & 1) != 0;
    return select(s2, 1.0 - s2, odd);
}

@compute @workgroup_size(WG)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = group_index(grid) * WG + lid;
    if (i >= p.n) { return; }
    let c = (p.e0 + i) / p.t;
    let a = exp_f32(alpha[c]);
    let inv_b = 1.0 / (exp_f32(beta[c]) + NO_DIV_BY_ZERO);
    let v = x[p.x_off + c * p.t_in + p.start + (p.e0 + i - c * p.t) - p.x0];
    y[p.y_off + i] = v + inv_b * sin2(v * a);
}
