// q8_0: Q8_0 weights (GGUF blocks: 32 int8 q and one scale d, w = d * q) for decode and prefill.
//
// Weight layout (formats/q8_0.py, Q8Weight), K a multiple of 32 (the wrappers check):
//   wq [N, K/4] u32   int8 four per word, element 4j in the low byte (GGUF's byte order: upload is a copy);
//   ws [N, K/32] f16  one scale per block, packed two per u32, element 2j in the low half.
//
// Entry points (each binds only what it uses; @binding(0) is always the params uniform):
//   quantize_act  x [T, K] f32 -> xq [T, K/4] u32 (int8 x4), xs [T, K/32] f32, with llama.cpp's q8_0
//                 rule per block of 32: d = max|x| / 127, q = roundf(x * (1/d)), halves away from zero.
//                 Bindings: 1 x, 2 xq, 3 xs. Params {n = T*K/32 blocks}.
//                 Dispatch: ceil(n / WG) workgroups of WG threads, one block per thread,
//                 flat workgroup index wid.x + wid.y * nwg.x (groups_for).
//   matvec_dot4   y[row_base + r] = sum_b wd[r,b] * xd[b] * sum_{j<32} wq[r,32b+j] * xq[32b+j]   (decode)
//                 int8 products through dot4I8Packed, exact i32 block sums, f32 across blocks.
//                 Bindings: 1 xq [K/4] u32, 2 xs [K/32] f32, 3 wq, 4 ws, 5 y [N_total] f32.
//   matvec_f32    y[row_base + r] = sum_b wd[r,b] * sum_j wq[r,32b+j] * x[32b+j]   (decode, f32 x,
//                 weights dequantized in registers). Bindings: 1 x [K] f32, 2 wq, 3 ws, 4 y [N_total] f32.
//                 Both matvecs: params {n = rows of this piece, k, row_base}; ROWS rows per workgroup of WG
//                 threads, WG / ROWS threads per row, each taking every (WG/ROWS)-th block of its row;
//                 dispatch ceil(n / ROWS) workgroups (flat index).
// Prefill's Q8_0 matmul is tiles_q8.wgsl (ops/tiles.py).

override WG: u32 = 256u;   // threads per workgroup (quantize_act, matvecs); a power of two
override ROWS: u32 = 4u;   // rows per workgroup in the matvecs; a power of two dividing WG
const QK: u32 = 32u;       // values per Q8_0 block

struct Params { a: u32, b: u32, c: u32, d: u32, e: u32, _p0: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<uniform> p: Params;

// #include "lib/rows.wgsl"

// #include "lib/q8_block.wgsl"

// ---- quantize_act ---------------------------------------------------------------------------------------
@group(0) @binding(1) var<storage, read> qa_x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> qa_q: array<u32>;
@group(0) @binding(3) var<storage, read_write> qa_d: array<f32>;

// roundf: nearest, halves away from zero; floor(2 * frac) is exact, unlike floor(a + 0.5).
fn round_away(v: vec4<f32>) -> vec4<f32> {
    let a = abs(v);
    let f = floor(a);
    return sign(v) * (f + floor(2.0 * (a - f)));
}

@compute @workgroup_size(WG)
fn quantize_act(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let blk = group_index(grid) * WG + lid;
    if (blk >= p.a) { return; }
    var v: array<vec4<f32>, 8>;
    var amax = 0.0;
    for (var i = 0u; i < 8u; i++) {
        v[i] = qa_x[8u * blk + i];
        let a = abs(v[i]);
        amax = max(amax, max(max(a.x, a.y), max(a.z, a.w)));
    }
    let d = amax / 127.0;
    let id = select(0.0, 1.0 / d, d != 0.0);
    for (var i = 0u; i < 8u; i++) {
        qa_q[8u * blk + i] = pack4xI8Clamp(vec4<i32>(round_away(v[i] * id)));
    }
    qa_d[blk] = d;
}

// ---- matvecs --------------------------------------------------------------------------------------------
@group(0) @binding(1) var<storage, read> mv_xq: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> mv_xd: array<f32>;
@group(0) @binding(3) var<storage, read> mv_wq: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> mv_ws: array<u32>;
@group(0) @binding(5) var<storage, read_write> mv_y: array<f32>;

@group(0) @binding(1) var<storage, read> mf_x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> mf_wq: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> mf_ws: array<u32>;
@group(0) @binding(4) var<storage, read_write> mf_y: array<f32>;

@compute @workgroup_size(WG)
fn matvec_dot4(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let tpr = WG / ROWS;
    let t = lid % tpr;
    let row = thread_row(grid, lid, tpr);
    let nb = p.b / QK;
    var acc = 0.0;
    if (row < p.a) {
        let base = row * nb;  // first block of this row
        for (var b = t; b < nb; b += tpr) {
            let w0 = mv_wq[2u * (base + b)];
            let w1 = mv_wq[2u * (base + b) + 1u];
            let s = block_dot_i8(w0, w1, mv_xq[2u * b], mv_xq[2u * b + 1u]);
            let si = base + b;
            acc += f32(s) * (block_scale(mv_ws[si >> 1u], si) * mv_xd[b]);
        }
    }
    let total = row_sum(lid, WG / ROWS, acc);
    if (t == 0u && row < p.a) { mv_y[p.c + row] = total; }
}

fn dot_i8x4(w: u32, x: vec4<f32>) -> f32 {
    return dot(vec4<f32>(unpack4xI8(w)), x);
}

@compute @workgroup_size(WG)
fn matvec_f32(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let tpr = WG / ROWS;
    let t = lid % tpr;
    let row = thread_row(grid, lid, tpr);
    let nb = p.b / QK;
    var acc = 0.0;
    if (row < p.a) {
        let base = row * nb;
        for (var b = t; b < nb; b += tpr) {
            let w0 = mf_wq[2u * (base + b)];
            let w1 = mf_wq[2u * (base + b) + 1u];
            let xb = 8u * b;  // vec4 index of the block's first 4 values
            let s = dot_i8x4(w0.x, mf_x[xb]) + dot_i8x4(w0.y, mf_x[xb + 1u]) + dot_i8x4(w0.z, mf_x[xb + 2u]) + dot_i8x4(w0.w, mf_x[xb + 3u])
                  + dot_i8x4(w1.x, mf_x[xb + 4u]) + dot_i8x4(w1.y, mf_x[xb + 5u]) + dot_i8x4(w1.z, mf_x[xb + 6u]) + dot_i8x4(w1.w, mf_x[xb + 7u]);
            let si = base + b;
            acc += s * block_scale(mf_ws[si >> 1u], si);
        }
    }
    let total = row_sum(lid, WG / ROWS, acc);
    if (t == 0u && row < p.a) { mf_y[p.c + row] = total; }
}
