// elementwise: y[i] = f(x[i]) (entry `unary`) or y[i] = f(a[i], b[i or i % c]) (entry `binary`), f32.
//
// Bindings (unary):  0 params; 1 x: [n] f32; 2 y: [n] f32.
// Bindings (binary): 0 params; 1 a: [n] f32; 2 b: [n] f32, or [c] f32 broadcast along one axis of a;
//           3 y: [n] f32.
// Params:   n = elements; c = length of b when it is broadcast, 0 when b has n elements; inner = elements
//           of a after the broadcast axis (1: b is a row vector over rows of c, as a LayerScale on [T, C];
//           T: one value per channel of [C, T]), so element i reads b[(i / inner) % c];
//           s = the scalar of `scale`, the lower bound of `clamp`; hi = the upper bound of `clamp`.
// Dispatch: ceil(n / WG) workgroups of WG threads, one element per thread, flat workgroup index
//           wid.x + wid.y * nwg.x (groups_for); threads past n do nothing.
// OP picks the function (override constant, one pipeline per op):
//   unary:  0 silu, 1 gelu (erf), 2 gelu_tanh, 3 scale, 4 erf, 5 clamp to [s, hi]
//   binary: 0 add, 1 mul, 2 swiglu = silu(a) * b, 3 gate = a * sigmoid(b) (the talker's shared-expert gate,
//           one logit a token: b [T] along axis 0 of a [T, C]), 4 gate_add: y += gate(a, b) (the gated shared
//           expert added to the routed experts' sum in one dispatch; y must not be a or b)
// Every storage binding is read_write, so that y may be one of the inputs (in place): wgpu rejects a
// dispatch that binds one buffer both read-only and read-write.
// WGSL's exp has implementation-defined precision (error growing with |x|) and no erf, so both are ours.

override WG: u32 = 256;
override OP: u32 = 0u;

struct Params { n: u32, c: u32, s: f32, inner: u32, hi: f32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
// binary entry: a is binding 1 (x above), b binding 2, y binding 3
@group(0) @binding(2) var<storage, read_write> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y3: array<f32>;

// #include "lib/grid.wgsl"

// #include "lib/exp.wgsl"

// #include "lib/silu.wgsl"

// erf(x), max abs error 1.2e-7 over all f32 (fits in float64, checked in f32 on the GPU):
//   |x| <= 0.85:        x * A(x^2), A minimax for erf(x)/x (fit error 6e-9);
//   0.85 < |x| < 3.95:  1 - exp(B(|x|)), B minimax for log(erfc(|x|)) (fit error 1.2e-8, scaled by erfc <= 0.23);
//   |x| >= 3.95:        +-1 (erfc(3.95) = 2.3e-8).
const ERF_SPLIT: f32 = 0.85;
const ERF_ONE: f32 = 3.95;

fn erf_small(x: f32) -> f32 {
    let s = x * x;
    var a = -6.332643097e-04;
    a = a * s + 5.054275505e-03;
    a = a * s - 2.680457383e-02;
    a = a * s + 1.128277034e-01;
    a = a * s - 3.761257529e-01;
    a = a * s + 1.128379107e+00;
    return x * a;
}

// log(erfc(t)) for ERF_SPLIT < t < ERF_ONE.
fn log_erfc(t: f32) -> f32 {
    var q = 1.666990634e-08;
    q = q * t + 1.250407081e-06;
    q = q * t - 4.213146167e-05;
    q = q * t + 5.739584449e-04;
    q = q * t - 4.675850272e-03;
    q = q * t + 2.622115985e-02;
    q = q * t - 1.097699329e-01;
    q = q * t - 6.321263909e-01;
    q = q * t - 1.130069017e+00;
    q = q * t + 2.815088665e-04;
    return q;
}

fn erf_f32(x: f32) -> f32 {
    let t = abs(x);
    if (t <= ERF_SPLIT) { return erf_small(x); }
    let e = select(1.0 - exp_f32(log_erfc(t)), 1.0, t >= ERF_ONE);
    return select(e, -e, x < 0.0);
}

// erfc(t) for t >= ERF_ONE, relative error below 1e-6: exp(-t^2) * R(1/t^2) / t with R a minimax fit
// (2.3e-7). t^2 is split as th^2 + tl (t + th) with th^2 exact, since the rounding of t^2 alone would cost
// t^2 * 6e-8 relative. Below 1e-38 (t > 9.3) it returns 0.
fn erfc_tail(t: f32) -> f32 {
    let th = bitcast<f32>(bitcast<u32>(t) & 0xfffff000u);
    let tl = t - th;
    let u = 1.0 / (t * t);
    var r = -6.688228250e-01;
    r = r * u + 4.052192569e-01;
    r = r * u - 2.817444205e-01;
    r = r * u + 5.641872883e-01;
    return exp_f32(-th * th) * exp_f32(-tl * (t + th)) * r / t;
}

// 0.5 x (1 + erf(x / sqrt 2)). For z = x / sqrt 2 < -ERF_SPLIT, 1 + erf(z) is computed as erfc(-z), without
// the cancellation of 1 + erf (which torch's own f32 gelu has), so the negative tail keeps about 1e-5
// relative precision down to underflow; the rounding of z, amplified by exp(-z^2), is what is left.
fn gelu(v: f32) -> f32 {
    let z = v * 0.7071067811865476;
    if (z >= -ERF_SPLIT) { return 0.5 * v * (1.0 + erf_f32(z)); }
    let t = -z;
    if (t < ERF_ONE) { return 0.5 * v * exp_f32(log_erfc(t)); }
    return 0.5 * v * erfc_tail(t);
}


// 0.5 x (1 + tanh(u)) = x * sigmoid(2u): the same function without the cancellation of 1 + tanh(u)
// for negative u, nor the overflow of tanh's own exp.
fn gelu_tanh(v: f32) -> f32 {
    let u = 0.7978845608028654 * (v + 0.044715 * v * v * v);
    return select(v / (1.0 + exp_f32(-2.0 * u)), 0.0 * v, -2.0 * u > EXP_HI);
}

fn unary_op(v: f32) -> f32 {
    if (OP == 0u) { return silu(v); }
    if (OP == 1u) { return gelu(v); }
    if (OP == 2u) { return gelu_tanh(v); }
    if (OP == 3u) { return v * p.s; }
    if (OP == 5u) { return min(max(v, p.s), p.hi); }
    return erf_f32(v);
}

fn binary_op(u: f32, v: f32) -> f32 {
    if (OP == 0u) { return u + v; }
    if (OP == 1u) { return u * v; }
    if (OP == 2u) { return silu(u) * v; }
    // sigmoid(v) = silu(v) / v would lose v = 0; where exp(-v) overflows the gate is 0
    return select(u / (1.0 + exp_f32(-v)), 0.0 * u, -v > EXP_HI);
}

@compute @workgroup_size(WG)
fn unary(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = group_index(grid) * WG + lid;
    if (i >= p.n) { return; }
    y[i] = unary_op(x[i]);
}

@compute @workgroup_size(WG)
fn binary(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = group_index(grid) * WG + lid;
    if (i >= p.n) { return; }
    let j = select(i, (i / p.inner) % p.c, p.c != 0u);  // inner >= 1 (the wrapper's)
    let r = binary_op(x[i], b[j]);
    if (OP == 4u) { y3[i] = y3[i] + r; } else { y3[i] = r; }
}
