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
//
// Decode entries that quantize x themselves (no quantize_act dispatch before them): each workgroup
// quantizes the whole x into workgroup memory (sx_q [K/4] u32, sx_d [K/32] f32: K * 9/8 bytes, XB blocks
// of capacity, XB >= K/32, set by the wrapper) with quantize_act's code (quant_block), so the int8 values
// are those of the separate pass, then takes the dot4 products from there. TPR threads per row, WG / TPR
// rows per workgroup; dispatch ceil(rows / (WG / TPR)) workgroups (flat index).
//   matvec_dot4_x  y[row_base + r] = W x as matvec_dot4 computes it from quantize_act(x).
//                  Bindings: 1 x [K] f32, 2 wq, 3 ws, 4 y [N_total] f32. Params {n = rows of this piece, k, row_base}.
//   multi_dot4, multi_f32  up to three weights of the same x in one dispatch (q/k/v, gate/up): rows [0, n0)
//                  from w0, then n1 rows of w1, then n2 of w2 (an unused slot is bound to w0 with 0 rows).
//                  multi_dot4 quantizes x in workgroup memory; multi_f32 is matvec_f32's math.
//                  Bindings: 1 x [K] f32, 2 wq0, 3 ws0, 4 y0, 5 wq1, 6 ws1, 7 y1, 8 wq2, 9 ws2, 10 y2.
//                  Params {n0, k, 0, n1, n2}; each weight in one binding (no row pieces).
//   swiglu_dot4, swiglu_f32  y[row_base + r] = W (silu(gate) * up): the down projection of a SwiGLU MLP
//                  reading its two halves. silu is lib/silu.wgsl's (elementwise.swiglu's), the product in
//                  f32 as that op stores it; swiglu_dot4 quantizes the product in workgroup memory (so it
//                  equals swiglu then matvec_dot4 bit for bit), swiglu_f32 forms it in registers.
//                  Bindings: 1 gate [K] f32, 2 up [K] f32, 3 wq, 4 ws, 5 y. Params {n = rows of this piece, k, row_base}.
//   multi_dot4_q   multi_dot4 reading an x that quantize_act quantized (where the tuning table keeps the
//                  separate pass): bindings 1 xq [K/4] u32, 2-10 as multi_dot4, 11 xd [K/32] f32.
//   multi_dot4_norm  multi_dot4 of x = rmsnorm(h + delta) * norm_w, which each workgroup forms and
//                  quantizes into its memory (the residual add and the norm before q/k/v or gate/up, without a
//                  dispatch of their own; ops/linear.py's matvec_multi_norm for 16-bit weights). Bindings as
//                  multi_dot4 with h in x's place, plus 11 delta [K] f32, 12 norm_w [K] f32, 13 out_h [K] f32
//                  (h + delta, written by workgroup 0; neither h nor delta). Override DELTA (0: x = rmsnorm(h);
//                  delta and out_h bound, unused). Params as multi_dot4 plus eps (f32 bits) in the sixth word.
// Prefill's Q8_0 matmul is tiles_q8.wgsl (ops/tiles.py).

override WG: u32 = 256u;   // threads per workgroup (quantize_act, matvecs); a power of two
override ROWS: u32 = 4u;   // rows per workgroup in the matvecs; a power of two dividing WG
override TPR: u32 = 32u;   // threads per row in the *_x, multi_* and swiglu_* entries; a power of two dividing WG
override XB: u32 = 64u;    // blocks of x the workgroup-memory copy holds (>= K / 32)
override DELTA: u32 = 1u;  // multi_dot4_norm: 1 x = rmsnorm(h + delta), 0 x = rmsnorm(h)
const QK: u32 = 32u;       // values per Q8_0 block

struct Params { a: u32, b: u32, c: u32, d: u32, e: u32, _p0: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<uniform> p: Params;

// #include "lib/rows.wgsl"

// #include "lib/q8_block.wgsl"

// #include "lib/q8_stage.wgsl"

// #include "lib/silu.wgsl"

// ---- quantize_act ---------------------------------------------------------------------------------------
@group(0) @binding(1) var<storage, read> qa_x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> qa_q: array<u32>;
@group(0) @binding(3) var<storage, read_write> qa_d: array<f32>;

@compute @workgroup_size(WG)
fn quantize_act(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let blk = group_index(grid) * WG + lid;
    if (blk >= p.a) { return; }
    let i = 8u * blk;
    let qb = quant_block(array<vec4<f32>, 8>(qa_x[i], qa_x[i + 1u], qa_x[i + 2u], qa_x[i + 3u], qa_x[i + 4u],
                                             qa_x[i + 5u], qa_x[i + 6u], qa_x[i + 7u]));
    qa_q[8u * blk] = qb.q0.x;
    qa_q[8u * blk + 1u] = qb.q0.y;
    qa_q[8u * blk + 2u] = qb.q0.z;
    qa_q[8u * blk + 3u] = qb.q0.w;
    qa_q[8u * blk + 4u] = qb.q1.x;
    qa_q[8u * blk + 5u] = qb.q1.y;
    qa_q[8u * blk + 6u] = qb.q1.z;
    qa_q[8u * blk + 7u] = qb.q1.w;
    qa_d[blk] = qb.d;
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

// ---- decode entries that quantize x in workgroup memory -------------------------------------------------
// x (binding 1, mf_x) quantized into workgroup memory; every thread of the workgroup must call it.
fn stage_x(lid: u32, nb: u32) {
    for (var b = lid; b < nb; b += WG) {
        let i = 8u * b;
        stage_block(b, array<vec4<f32>, 8>(mf_x[i], mf_x[i + 1u], mf_x[i + 2u], mf_x[i + 3u], mf_x[i + 4u],
                                           mf_x[i + 5u], mf_x[i + 6u], mf_x[i + 7u]));
    }
    workgroupBarrier();
}

// Block b of a weight row against f32 values x0..x7 (the f32 path).
fn f32_block(w0: vec4<u32>, w1: vec4<u32>, s: f32, x: array<vec4<f32>, 8>) -> f32 {
    return s * (dot_i8x4(w0.x, x[0]) + dot_i8x4(w0.y, x[1]) + dot_i8x4(w0.z, x[2]) + dot_i8x4(w0.w, x[3])
              + dot_i8x4(w1.x, x[4]) + dot_i8x4(w1.y, x[5]) + dot_i8x4(w1.z, x[6]) + dot_i8x4(w1.w, x[7]));
}

fn x_block(b: u32) -> array<vec4<f32>, 8> {
    let i = 8u * b;
    return array<vec4<f32>, 8>(mf_x[i], mf_x[i + 1u], mf_x[i + 2u], mf_x[i + 3u], mf_x[i + 4u], mf_x[i + 5u],
                               mf_x[i + 6u], mf_x[i + 7u]);
}

@compute @workgroup_size(WG)
fn matvec_dot4_x(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let nb = p.b / QK;
    stage_x(lid, nb);
    let t = lid % TPR;
    let row = thread_row(grid, lid, TPR);
    var acc = 0.0;
    if (row < p.a) {
        let base = row * nb;
        for (var b = t; b < nb; b += TPR) {
            let si = base + b;
            acc += staged_block(mf_wq[2u * si], mf_wq[2u * si + 1u], block_scale(mf_ws[si >> 1u], si), b);
        }
    }
    let total = row_sum(lid, TPR, acc);
    if (t == 0u && row < p.a) { mf_y[p.c + row] = total; }
}

// ---- multi: up to three weights of the same x ------------------------------------------------------------
@group(0) @binding(5) var<storage, read> mm_wq1: array<vec4<u32>>;
@group(0) @binding(6) var<storage, read> mm_ws1: array<u32>;
@group(0) @binding(7) var<storage, read_write> mm_y1: array<f32>;
@group(0) @binding(8) var<storage, read> mm_wq2: array<vec4<u32>>;
@group(0) @binding(9) var<storage, read> mm_ws2: array<u32>;
@group(0) @binding(10) var<storage, read_write> mm_y2: array<f32>;

// Which weight a multi row comes from (seg), and the row within it.
struct MultiRow { ok: bool, seg: u32, local: u32 }

fn multi_row(row: u32) -> MultiRow {
    let n0 = p.a;
    let n1 = p.d;
    let seg = select(select(2u, 1u, row < n0 + n1), 0u, row < n0);
    let local = row - select(select(n0 + n1, n0, seg == 1u), 0u, seg == 0u);
    return MultiRow(row < n0 + n1 + p.e, seg, local);
}

// Weight words 2i, 2i + 1 and the scale of block i of weight seg.
struct WBlock { w0: vec4<u32>, w1: vec4<u32>, s: f32 }

fn multi_block(seg: u32, i: u32) -> WBlock {
    if (seg == 0u) { return WBlock(mf_wq[2u * i], mf_wq[2u * i + 1u], block_scale(mf_ws[i >> 1u], i)); }
    if (seg == 1u) { return WBlock(mm_wq1[2u * i], mm_wq1[2u * i + 1u], block_scale(mm_ws1[i >> 1u], i)); }
    return WBlock(mm_wq2[2u * i], mm_wq2[2u * i + 1u], block_scale(mm_ws2[i >> 1u], i));
}

fn multi_store(m: MultiRow, v: f32) {
    if (m.seg == 0u) { mf_y[m.local] = v; } else if (m.seg == 1u) { mm_y1[m.local] = v; } else { mm_y2[m.local] = v; }
}

@compute @workgroup_size(WG)
fn multi_dot4(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    stage_x(lid, p.b / QK);
    multi_dot4_rows(grid, lid);
}

// The rows of multi_dot4 over the staged x.
fn multi_dot4_rows(grid: Grid, lid: u32) {
    let nb = p.b / QK;
    let t = lid % TPR;
    let m = multi_row(thread_row(grid, lid, TPR));
    var acc = 0.0;
    if (m.ok) {
        for (var b = t; b < nb; b += TPR) {
            let wb = multi_block(m.seg, m.local * nb + b);
            acc += staged_block(wb.w0, wb.w1, wb.s, b);
        }
    }
    let total = row_sum(lid, TPR, acc);
    if (t == 0u && m.ok) { multi_store(m, total); }
}

@group(0) @binding(11) var<storage, read> mq_xd: array<f32>;

@compute @workgroup_size(WG)
fn multi_dot4_q(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let nb = p.b / QK;
    let t = lid % TPR;
    let m = multi_row(thread_row(grid, lid, TPR));
    var acc = 0.0;
    if (m.ok) {
        for (var b = t; b < nb; b += TPR) {
            let wb = multi_block(m.seg, m.local * nb + b);
            acc += f32(block_dot_i8(wb.w0, wb.w1, mv_xq[2u * b], mv_xq[2u * b + 1u])) * (wb.s * mq_xd[b]);
        }
    }
    let total = row_sum(lid, TPR, acc);
    if (t == 0u && m.ok) { multi_store(m, total); }
}

@compute @workgroup_size(WG)
fn multi_f32(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let nb = p.b / QK;
    let t = lid % TPR;
    let m = multi_row(thread_row(grid, lid, TPR));
    var acc = 0.0;
    if (m.ok) {
        for (var b = t; b < nb; b += TPR) {
            let wb = multi_block(m.seg, m.local * nb + b);
            acc += f32_block(wb.w0, wb.w1, wb.s, x_block(b));
        }
    }
    let total = row_sum(lid, TPR, acc);
    if (t == 0u && m.ok) { multi_store(m, total); }
}

// ---- multi_dot4_norm: the norm before the projections, in each workgroup -----------------------------------
@group(0) @binding(11) var<storage, read> mn_delta: array<vec4<f32>>;
@group(0) @binding(12) var<storage, read> mn_w: array<vec4<f32>>;
@group(0) @binding(13) var<storage, read_write> mn_h: array<vec4<f32>>;

fn residual4(i: u32) -> vec4<f32> {
    if (DELTA == 1u) { return mf_x[i] + mn_delta[i]; }
    return mf_x[i];
}

// x's vec4 i normed (h = h + delta kept by workgroup 0, which writes out_h).
fn normed4(i: u32, r: f32, first: bool) -> vec4<f32> {
    let h = residual4(i);
    if (DELTA == 1u && first) { mn_h[i] = h; }
    return (h * r) * mn_w[i];
}

@compute @workgroup_size(WG)
fn multi_dot4_norm(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let nb = p.b / QK;
    var ss = 0.0;
    for (var i = lid; i < 8u * nb; i += WG) {
        let v = residual4(i);
        ss += dot(v, v);
    }
    let r = inverseSqrt(row_sum(lid, WG, ss) / f32(p.b) + bitcast<f32>(p._p0));
    workgroupBarrier();  // row_sum's array is reused by the rows' sums
    let first = group_index(grid) == 0u;
    for (var b = lid; b < nb; b += WG) {
        let i = 8u * b;
        stage_block(b, array<vec4<f32>, 8>(normed4(i, r, first), normed4(i + 1u, r, first), normed4(i + 2u, r, first),
                                           normed4(i + 3u, r, first), normed4(i + 4u, r, first), normed4(i + 5u, r, first),
                                           normed4(i + 6u, r, first), normed4(i + 7u, r, first)));
    }
    workgroupBarrier();
    multi_dot4_rows(grid, lid);
}

// ---- swiglu: the down projection of silu(gate) * up ------------------------------------------------------
@group(0) @binding(1) var<storage, read> sg_gate: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> sg_up: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> sg_wq: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> sg_ws: array<u32>;
@group(0) @binding(5) var<storage, read_write> sg_y: array<f32>;

// silu(gate) * up for vec4 j, in f32 as elementwise.swiglu stores it.
fn swiglu4(j: u32) -> vec4<f32> {
    let g = sg_gate[j];
    return vec4<f32>(silu(g.x), silu(g.y), silu(g.z), silu(g.w)) * sg_up[j];
}

fn swiglu_block(b: u32) -> array<vec4<f32>, 8> {
    let i = 8u * b;
    return array<vec4<f32>, 8>(swiglu4(i), swiglu4(i + 1u), swiglu4(i + 2u), swiglu4(i + 3u), swiglu4(i + 4u),
                               swiglu4(i + 5u), swiglu4(i + 6u), swiglu4(i + 7u));
}

@compute @workgroup_size(WG)
fn swiglu_dot4(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let nb = p.b / QK;
    for (var b = lid; b < nb; b += WG) { stage_block(b, swiglu_block(b)); }
    workgroupBarrier();
    let t = lid % TPR;
    let row = thread_row(grid, lid, TPR);
    var acc = 0.0;
    if (row < p.a) {
        let base = row * nb;
        for (var b = t; b < nb; b += TPR) {
            let si = base + b;
            acc += staged_block(sg_wq[2u * si], sg_wq[2u * si + 1u], block_scale(sg_ws[si >> 1u], si), b);
        }
    }
    let total = row_sum(lid, TPR, acc);
    if (t == 0u && row < p.a) { sg_y[p.c + row] = total; }
}

@compute @workgroup_size(WG)
fn swiglu_f32(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let nb = p.b / QK;
    let t = lid % TPR;
    let row = thread_row(grid, lid, TPR);
    var acc = 0.0;
    if (row < p.a) {
        let base = row * nb;
        for (var b = t; b < nb; b += TPR) {
            let si = base + b;
            acc += f32_block(sg_wq[2u * si], sg_wq[2u * si + 1u], block_scale(sg_ws[si >> 1u], si), swiglu_block(b));
        }
    }
    let total = row_sum(lid, TPR, acc);
    if (t == 0u && row < p.a) { sg_y[p.c + row] = total; }
}
