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
//   add_rmsnorm's plus 6 yq: [R, D/4] u32 (int8 x4), 7 yd: [R, D/32] f32; D % 32 == 0. The normed row is
//   quantized from workgroup memory, STAGE values a pass (one pass at the thinker's D = 2048).
// Params:   rows = R, d = D, eps, flags (layernorm: bit 0 apply w, bit 1 apply b; the wrapper binds a
//           small dummy for a missing one).
// Dispatch: one workgroup of WG threads (a power of two) per row, flat index wid.x + wid.y * nwg.x
//           (groups_for); threads stride over the row; sums are reduced in workgroup memory in two levels
//           (lib/reduce.wgsl: two barriers, where a tree takes log2(WG) + 1; a decode row is one workgroup's
//           chain of round trips, which is what these kernels cost).
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

// #include "lib/grid.wgsl"

// #include "lib/reduce.wgsl"

// Sum of one value per thread over the workgroup; every thread gets the total (the same bits in each).
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    return wg_sum(Lanes(lid), v);
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
    let r = add_sum_squares(base, lid);
    var i = lid;
    for (; i + 3u * WG < p.d; i += 4u * WG) {
        store_normed(base, i, vec4<f32>(y4[base + i], y4[base + i + WG], y4[base + i + 2u * WG], y4[base + i + 3u * WG]), r);
    }
    for (; i < p.d; i += WG) {
        y[base + i] = (y4[base + i] * r) * w[i];
    }
}

// h' = h + delta into y4 (this thread's elements), and the norm's factor 1 / rms(h').
fn add_sum_squares(base: u32, lid: u32) -> f32 {
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
    return inverseSqrt(workgroup_sum(lid, (ss.x + ss.y) + (ss.z + ss.w)) / f32(p.d) + p.eps);
}

// ---- the norms that quantize their output ---------------------------------------------------------------
// #include "lib/q8_quant.wgsl"

@group(0) @binding(6) var<storage, read_write> yq: array<u32>;
@group(0) @binding(7) var<storage, read_write> yd: array<f32>;

// add_rmsnorm_q8's normed values, STAGE of them a pass, for its block-per-thread quantization: from
// workgroup memory instead of a storage barrier and a global round trip. Value i sits at i + i / 32, so
// the 32 threads of a subgroup, each reading its own block, hit 32 different banks.
const STAGE: u32 = 2048u;
var<workgroup> staged: array<f32, STAGE + STAGE / 32u>;

fn stage_at(i: u32) -> u32 {
    return i + i / 32u;
}

fn staged4(s: u32) -> vec4<f32> {
    return vec4<f32>(staged[s], staged[s + 1u], staged[s + 2u], staged[s + 3u]);
}

// y = (h' * r) * w for the values [c0, c0 + n) of the row at base (this thread's, as add_rmsnorm_row
// stores them), into y and into `staged`.
fn store_staged(base: u32, c0: u32, n: u32, lid: u32, r: f32) {
    var i = lid;
    for (; i + 3u * WG < n; i += 4u * WG) {
        let e = base + c0 + i;
        let o = (vec4<f32>(y4[e], y4[e + WG], y4[e + 2u * WG], y4[e + 3u * WG]) * r)
              * vec4<f32>(w[c0 + i], w[c0 + i + WG], w[c0 + i + 2u * WG], w[c0 + i + 3u * WG]);
        y[e] = o.x;
        y[e + WG] = o.y;
        y[e + 2u * WG] = o.z;
        y[e + 3u * WG] = o.w;
        staged[stage_at(i)] = o.x;
        staged[stage_at(i + WG)] = o.y;
        staged[stage_at(i + 2u * WG)] = o.z;
        staged[stage_at(i + 3u * WG)] = o.w;
    }
    for (; i < n; i += WG) {
        let o = (y4[base + c0 + i] * r) * w[c0 + i];
        y[base + c0 + i] = o;
        staged[stage_at(i)] = o;
    }
}

// The staged n values quantized per block of 32, one block a thread; block b of the pass is block
// c0 / 32 + b of the row.
fn quantize_staged(base: u32, c0: u32, n: u32, lid: u32) {
    for (var b = lid; b < n / 32u; b += WG) {
        let s = stage_at(32u * b);
        let v = array<vec4<f32>, 8>(staged4(s), staged4(s + 4u), staged4(s + 8u), staged4(s + 12u), staged4(s + 16u),
                                    staged4(s + 20u), staged4(s + 24u), staged4(s + 28u));
        let qb = quant_block(v);
        let q = (base + c0) / 4u + 8u * b;
        yq[q] = qb.q0.x;
        yq[q + 1u] = qb.q0.y;
        yq[q + 2u] = qb.q0.z;
        yq[q + 3u] = qb.q0.w;
        yq[q + 4u] = qb.q1.x;
        yq[q + 5u] = qb.q1.y;
        yq[q + 6u] = qb.q1.z;
        yq[q + 7u] = qb.q1.w;
        yd[(base + c0) / 32u + b] = qb.d;
    }
}

@compute @workgroup_size(WG)
fn add_rmsnorm_q8(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let row = group_index(grid);
    if (row >= p.rows) { return; }
    let base = row * p.d;
    let r = add_sum_squares(base, lid);
    for (var c0 = 0u; c0 < p.d; c0 += STAGE) {  // one pass up to D = STAGE (the thinker's 2048)
        let n = min(STAGE, p.d - c0);
        store_staged(base, c0, n, lid, r);
        workgroupBarrier();  // the pass's values staged
        quantize_staged(base, c0, n, lid);
        workgroupBarrier();  // read before the next pass overwrites them
    }
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
