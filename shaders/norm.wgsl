// norm: RMSNorm (HF Qwen3RMSNorm in float32) and LayerNorm (torch.nn.LayerNorm) over rows of D, f32.
//
// Entry `rmsnorm`:   y = (x * inverseSqrt(mean(x^2) + eps)) * w
//   Bindings: 0 params; 1 x: [R, D] f32; 2 w: [D] f32; 3 y: [R, D] f32.
// Entry `layernorm`: y = (x - mean) * inverseSqrt(var + eps) * w + b, var biased (divided by D),
//   mean and var by the corrected two-pass algorithm (see below)
//   Bindings: 0 params; 1 x: [R, D] f32; 2 w: [D] f32; 3 b: [D] f32; 4 y: [R, D] f32.
// Entry `add_rmsnorm`: h' = h + delta; y = rmsnorm(h') (a decoder's residual add and the norm after it,
//   one dispatch instead of two; the same f32 operations as add, then rmsnorm, summed in the same order).
//   Bindings: 0 params; 1 h: [R, D] f32; 2 w: [D] f32; 3 y: [R, D] f32; 4 h': [R, D] f32 (may be h);
//   5 delta: [R, D] f32.
// Entry `add_rmsnorm_q8`: add_rmsnorm, then y quantized by llama.cpp's q8_0 rule for the Q8_0 matvecs that
//   read it (lib/q8_quant.wgsl: quantize_act's values, one dispatch instead of two). Bindings as
//   add_rmsnorm's plus 6 yq: [R, D/4] u32 (int8 x4), 7 yd: [R, D/32] f32; D % 32 == 0.
// Params:   rows = R, d = D, eps, flags (layernorm: bit 0 apply w, bit 1 apply b; the wrapper binds a
//           small dummy for a missing one).
// Dispatch: one workgroup of WG threads (a power of two) per row, flat index wid.x + wid.y * nwg.x
//           (groups_for); threads stride over the row; sums are reduced as a tree in workgroup memory.
// x and y are read_write so that y may be x (in place): wgpu rejects a dispatch that binds one buffer
// both read-only and read-write. In place is safe: a thread writes only elements it has just read
// itself, and the other reads of the row happen before the barrier that precedes the writes.

override WG: u32 = 256;

struct Params { rows: u32, d: u32, eps: f32, flags: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;   // rmsnorm
@group(0) @binding(3) var<storage, read> bias: array<f32>;      // layernorm
@group(0) @binding(4) var<storage, read_write> y4: array<f32>;  // layernorm; add_rmsnorm's h'
@group(0) @binding(5) var<storage, read> delta: array<f32>;     // add_rmsnorm

// #include "lib/rows.wgsl"

// Sum of one value per thread over the workgroup; every thread gets the total.
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    let total = row_sum(lid, WG, v);
    workgroupBarrier();  // row_sum's array is reused by the next call
    return total;
}

// Loops over a row take four elements per step with their loads issued first: a decode row (one row,
// one workgroup) is a chain of dependent memory round trips otherwise, which is what these kernels cost.

// y at elements i, i + WG, i + 2 WG, i + 3 WG of the row at base: (v * r) * w.
fn store_normed(base: u32, i: u32, v: vec4<f32>, r: f32) {
    let o = (v * r) * vec4<f32>(w[i], w[i + WG], w[i + 2u * WG], w[i + 3u * WG]);
    y[base + i] = o.x;
    y[base + i + WG] = o.y;
    y[base + i + 2u * WG] = o.z;
    y[base + i + 3u * WG] = o.w;
}

@compute @workgroup_size(WG)
fn rmsnorm(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let row = group_index(grid);
    if (row >= p.rows) { return; }  // uniform per workgroup, so the barriers below stay uniform
    rmsnorm_row(row * p.d, lid);
}

fn rmsnorm_row(base: u32, lid: u32) {
    var ss = vec4<f32>(0.0);
    var i = lid;
    for (; i + 3u * WG < p.d; i += 4u * WG) {
        let v = vec4<f32>(x[base + i], x[base + i + WG], x[base + i + 2u * WG], x[base + i + 3u * WG]);
        ss += v * v;
    }
    for (; i < p.d; i += WG) {
        let v = x[base + i];
        ss.x += v * v;
    }
    let r = inverseSqrt(workgroup_sum(lid, (ss.x + ss.y) + (ss.z + ss.w)) / f32(p.d) + p.eps);
    i = lid;
    for (; i + 3u * WG < p.d; i += 4u * WG) {
        store_normed(base, i, vec4<f32>(x[base + i], x[base + i + WG], x[base + i + 2u * WG], x[base + i + 3u * WG]), r);
    }
    for (; i < p.d; i += WG) {
        y[base + i] = (x[base + i] * r) * w[i];
    }
}

@compute @workgroup_size(WG)
fn add_rmsnorm(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let row = group_index(grid);
    if (row >= p.rows) { return; }  // uniform per workgroup
    add_rmsnorm_row(row * p.d, lid);
}

fn add_rmsnorm_row(base: u32, lid: u32) {
    var ss = vec4<f32>(0.0);
    var i = lid;
    for (; i + 3u * WG < p.d; i += 4u * WG) {
        let v = vec4<f32>(x[base + i], x[base + i + WG], x[base + i + 2u * WG], x[base + i + 3u * WG])
              + vec4<f32>(delta[base + i], delta[base + i + WG], delta[base + i + 2u * WG], delta[base + i + 3u * WG]);
        y4[base + i] = v.x;  // read back below by this same thread only
        y4[base + i + WG] = v.y;
        y4[base + i + 2u * WG] = v.z;
        y4[base + i + 3u * WG] = v.w;
        ss += v * v;
    }
    for (; i < p.d; i += WG) {
        let v = x[base + i] + delta[base + i];
        y4[base + i] = v;
        ss.x += v * v;
    }
    let r = inverseSqrt(workgroup_sum(lid, (ss.x + ss.y) + (ss.z + ss.w)) / f32(p.d) + p.eps);
    i = lid;
    for (; i + 3u * WG < p.d; i += 4u * WG) {
        store_normed(base, i, vec4<f32>(y4[base + i], y4[base + i + WG], y4[base + i + 2u * WG], y4[base + i + 3u * WG]), r);
    }
    for (; i < p.d; i += WG) {
        y[base + i] = (y4[base + i] * r) * w[i];
    }
}

// ---- the norms that quantize their output ---------------------------------------------------------------
// #include "lib/q8_quant.wgsl"

@group(0) @binding(6) var<storage, read_write> yq: array<u32>;
@group(0) @binding(7) var<storage, read_write> yd: array<f32>;

fn y_quad(o: u32) -> vec4<f32> {
    return vec4<f32>(y[o], y[o + 1u], y[o + 2u], y[o + 3u]);
}

// The row's y (written by the whole workgroup) quantized per block of 32, one block a thread.
fn quantize_row(base: u32, lid: u32) {
    storageBarrier();  // y's row, written by the other threads of this workgroup
    for (var b = lid; b < p.d / 32u; b += WG) {
        let o = base + 32u * b;
        let v = array<vec4<f32>, 8>(y_quad(o), y_quad(o + 4u), y_quad(o + 8u), y_quad(o + 12u), y_quad(o + 16u),
                                    y_quad(o + 20u), y_quad(o + 24u), y_quad(o + 28u));
        let qb = quant_block(v);
        let q = base / 4u + 8u * b;
        yq[q] = qb.q0.x;
        yq[q + 1u] = qb.q0.y;
        yq[q + 2u] = qb.q0.z;
        yq[q + 3u] = qb.q0.w;
        yq[q + 4u] = qb.q1.x;
        yq[q + 5u] = qb.q1.y;
        yq[q + 6u] = qb.q1.z;
        yq[q + 7u] = qb.q1.w;
        yd[base / 32u + b] = qb.d;
    }
}

@compute @workgroup_size(WG)
fn add_rmsnorm_q8(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let row = group_index(grid);
    if (row >= p.rows) { return; }
    add_rmsnorm_row(row * p.d, lid);
    quantize_row(row * p.d, lid);
}

@compute @workgroup_size(WG)
fn layernorm(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let row = group_index(grid);
    if (row >= p.rows) { return; }
    let base = row * p.d;
    var s = 0.0;
    for (var i = lid; i < p.d; i += WG) { s += x[base + i]; }
    let mean = workgroup_sum(lid, s) / f32(p.d);
    // Corrected two-pass variance: the f32 mean is off by about ulp(mean), which matters when the mean is
    // large against the spread; sum(x - mean) measures that error, and it is taken out of both the
    // variance and the centring (not E[x^2] - mean^2, which cancels catastrophically).
    var sc = 0.0;
    var sq = 0.0;
    for (var i = lid; i < p.d; i += WG) {
        let c = x[base + i] - mean;
        sc += c;
        sq += c * c;
    }
    let delta = workgroup_sum(lid, sc) / f32(p.d);
    let var_ = max(workgroup_sum(lid, sq) / f32(p.d) - delta * delta, 0.0);
    let r = inverseSqrt(var_ + p.eps);
    let use_w = (p.flags & 1u) != 0u;
    let use_b = (p.flags & 2u) != 0u;
    for (var i = lid; i < p.d; i += WG) {
        var v = ((x[base + i] - mean) - delta) * r;  // mean + delta would round to ulp(mean)
        if (use_w) { v *= w[i]; }
        if (use_b) { v += bias[i]; }
        y4[base + i] = v;
    }
}
