// conv: causal Conv1d and ConvTranspose1d over channels-first f32 activations [C, T] (batch 1), as
// code2wav's Qwen3OmniMoeCausalConvNet and Qwen3OmniMoeCausalTransConvNet compute them. Weights are f32,
// f16 or bf16 (WTYPE), read as u32 words (16-bit ones two to a word, element 2j in the low half); f32 sums.
//
// Entry `conv1d`: y[co, t] = bias[co] + sum_{ci in co's group, k < K} w[co, ci - g0, k] * x[ci, t*S + k*D - P]
//   with x = 0 outside [0, T_in): P = (K - 1) D + 1 - S is Transformers' left padding (negative: a crop),
//   and the zeros past T_in its extra right padding (T_out = ceil(T_in / S), worked out in ops/conv.py).
//   Weight [C_out, C_in / groups, K] as torch stores it. Optionally + residual[co, t].
// Entry `conv_transpose1d`: y[co, t] = bias[co] + sum_ci sum_{k < K, k = t + P (mod S)} x[ci, (t + P - k) / S] * w[ci, co, k]
//   with x = 0 outside [0, T_in): nn.ConvTranspose1d (groups 1, dilation 1) with its first P = K - S and
//   last P outputs trimmed. Weight [C_in, C_out, K] as torch stores it.
//
// Bindings: 0 params; 1 x: f32 window; 2 w: u32 words, window (WTYPE); 3 bias: [C_out] f32;
//           4 y: f32 window, read_write; 5 residual: f32 window, read_write (conv1d; may be y itself).
//   A window is a binding that starts at an aligned offset at or before the first element it is for;
//   x_off, w_off, y_off, r_off are those first elements' indices within their windows (ops/pieces.py).
// Params (sizes in elements):
//   t_in, t_out:    T_in, T_out (row lengths of x and y)
//   rows, co0:      output channels of this dispatch and the first of them (y's window starts at row co0)
//   ci0, ci1:       input channels [ci0, ci1) bound in this dispatch (x's window starts at row ci0)
//   cin_g, cout_g:  conv1d: C_in / groups, C_out / groups. conv_transpose1d: cout_g = C_out (w's row is
//                   C_out * K; its window starts at row ci0), cin_g unused
//   k, stride, dilation, pad: K, S, D (transpose: 1), P (i32)
//   x_off, w_off, y_off, r_off: window offsets (conv1d's w window starts at row co0)
//   flags: bit 0 add bias, bit 1 accumulate into y (a later piece of input channels: no bias, no
//          residual), bit 2 add residual
//   k_split, plane: conv1d_tiled's split-K (a conv of too few tiles to reach every compute unit):
//          workgroup z sums kk [z k_split, (z + 1) k_split) into plane z of y (from z plane on; bias and
//          residual in plane 0 only), and split_sum.wgsl adds the planes; one split: k_split >= the kk.
// Dispatch (conv1d, conv_transpose1d): one thread per output element of the dispatch's rows, flat index
//   group_index(grid) * WG + lid over rows x T_out (groups_for), time fastest, so a workgroup's
//   threads mostly share one output channel (its weights are one broadcast load) and read neighbouring x.
// Entry `conv1d_tiled` (groups = 1): the same sums as an implicit GEMM, y[co, t] = sum_kk W[co, kk] B[kk, t]
//   over this dispatch's kk = (ci - ci0) K + k, with W = the weight rows [C_out, C_in K] as torch stores them
//   and B[kk, t] = x[ci, t S + k D - P] gathered from x as the tiles are staged (im2col, never stored).
// Entry `conv_transpose1d_tiled`: polyphase. Output t is phase r = (t + P) % S, position q = (t + P) / S;
//   its taps are k = r + m S < K on input q - m, so each phase is a GEMM over kk = (ci - ci0) MT + m (MT =
//   ceil(K / S) taps a phase; the weight is 0 where r + m S >= K): W_r[co, kk] = w[ci, co, r + m S],
//   B[kk, q] = x[ci, q - m]; outputs q S + r - P outside [0, T_out) are computed and dropped.
// Both tiled entries (the structure of lib/tiles.wgsl): one workgroup of 16 x 16 threads per tile of 64 output
//   channels x 64 columns (steps t, or one phase's positions q from qb = P / S on); flat workgroup index
//   (groups_for) = column tile * ceil(rows / 64) + channel tile, for the transpose (q tile * S + r) *
//   ceil(rows / 64) + channel tile. The K loop stages 32 kk a step: W as [kk][co] and B as [kk][column]
//   vec4 tiles in workgroup memory (16 KiB), each thread then reads 2 vec4 per 16 FMAs for its 4 consecutive
//   channels x 4 consecutive columns; the next step's global loads are issued while this one computes. K,
//   stride and dilation are override constants (KT, ST, DT) so that kk -> (ci, k) divides by constants;
//   params' k, stride, dilation must match them. Every loop over a vector's components or a small array
//   is written out: naga emits WGSL loops as while loops that drivers do not unroll, and such a loop puts
//   the array in slow local memory (only the 32-step kk loop over the staged tiles stays a loop, four kk
//   a trip). Entries `conv1d_tiled_wide` and `conv_transpose1d_tiled_wide`: the same on 128 x 128 tiles,
//   8 x 8 outputs a thread, TKW (16 or 32) kk a step (see "wide tiles" below).

override WG: u32 = 256;
override WTYPE: u32 = 0u;  // 0 f32, 1 f16, 2 bf16

const FLAG_BIAS: u32 = 1u;
const FLAG_ACCUMULATE: u32 = 2u;
const FLAG_RESIDUAL: u32 = 4u;

struct Params {
    t_in: u32, t_out: u32, rows: u32, co0: u32,
    ci0: u32, ci1: u32, cin_g: u32, cout_g: u32,
    k: u32, stride: u32, dilation: u32, pad: i32,
    x_off: u32, w_off: u32, y_off: u32, r_off: u32,
    flags: u32, k_split: u32, plane: u32, _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> res: array<f32>;

// #include "lib/packed16.wgsl"

// #include "lib/grid.wgsl"

// Weight element e of the w window.
fn weight(e: u32) -> f32 {
    if (WTYPE == 0u) { return bitcast<f32>(w[e]); }
    return half16(w[e >> 1u], (e & 1u) == 1u);
}

// conv1d_tiled's split of kk, its workgroup z (0 in every other entry).
var<private> split_z: u32;

// Stores one output: the first piece of input channels writes sum + bias (+ residual), later ones add; a
// split's plane past the first writes its sum alone.
fn store(co_l: u32, t: u32, acc: f32) {
    let i = co_l * p.t_out + t;
    let flags = select(p.flags, 0u, split_z > 0u);
    if ((flags & FLAG_ACCUMULATE) != 0u) {
        y[p.y_off + i] += acc;
        return;
    }
    var v = acc;
    if ((flags & FLAG_BIAS) != 0u) { v += bias[p.co0 + co_l]; }
    if ((flags & FLAG_RESIDUAL) != 0u) { v += res[p.r_off + i]; }
    y[p.y_off + split_z * p.plane + i] = v;
}

// The output a direct kernel's thread computes: row co_l of the dispatch (channel co), step t.
struct Output { ok: bool, co_l: u32, co: u32, t: u32 }

fn output_of(idx: u32) -> Output {
    let co_l = idx / p.t_out;
    return Output(idx < p.rows * p.t_out, co_l, p.co0 + co_l, idx % p.t_out);
}

@compute @workgroup_size(WG)
fn conv1d(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let o = output_of(group_index(grid) * WG + lid);
    if (!o.ok) { return; }
    let g0 = (o.co / p.cout_g) * p.cin_g;           // first input channel of the channel's group
    let lo = max(g0, p.ci0);
    let hi = min(g0 + p.cin_g, p.ci1);
    let start = i32(o.t * p.stride) - p.pad;        // x position of tap 0
    // Taps k in [k_lo, k_hi) read inside [0, T_in).
    var k_lo = 0u;
    if (start < 0) { k_lo = min(p.k, (u32(-start) + p.dilation - 1u) / p.dilation); }
    var k_hi = p.k;
    let last = start + i32((p.k - 1u) * p.dilation);
    if (last >= i32(p.t_in)) {
        k_hi = select(0u, (u32(i32(p.t_in) - 1 - start) / p.dilation) + 1u, start < i32(p.t_in));
        k_hi = min(k_hi, p.k);
    }
    var acc = 0.0;
    if (k_lo < k_hi) {
        for (var ci = lo; ci < hi; ci++) {
            let xrow = p.x_off + (ci - p.ci0) * p.t_in;
            let wrow = p.w_off + (o.co_l * p.cin_g + (ci - g0)) * p.k;
            for (var kk = k_lo; kk < k_hi; kk++) {
                acc += weight(wrow + kk) * x[xrow + u32(start + i32(kk * p.dilation))];
            }
        }
    }
    store(o.co_l, o.t, acc);
}

@compute @workgroup_size(WG)
fn conv_transpose1d(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let o = output_of(group_index(grid) * WG + lid);
    if (!o.ok) { return; }
    let tp = o.t + u32(p.pad);                       // position before the trim
    // Taps k = tp - l S for input positions l: k from tp mod S up in steps of S, l < T_in, k < K.
    var k0 = tp % p.stride;
    let l0 = tp / p.stride;                          // the input position of tap k0
    if (l0 >= p.t_in) {                              // skip taps whose input lies past the end
        k0 += (l0 - p.t_in + 1u) * p.stride;
    }
    var acc = 0.0;
    for (var ci = p.ci0; ci < p.ci1; ci++) {
        let xrow = p.x_off + (ci - p.ci0) * p.t_in;
        let wrow = p.w_off + ((ci - p.ci0) * p.cout_g + o.co) * p.k;
        for (var kk = k0; kk < p.k && kk <= tp; kk += p.stride) {
            acc += weight(wrow + kk) * x[xrow + (tp - kk) / p.stride];
        }
    }
    store(o.co_l, o.t, acc);
}

// ---- the tiled kernels: implicit GEMMs --------------------------------------------------------------

const TCO: u32 = 64u;               // output channels per tile
const TQ: u32 = 64u;                // columns per tile: output steps (conv1d), positions q of one phase (transpose)
const TK: u32 = 32u;                // kk values per step of the K loop
const TX: u32 = TQ / 4u;            // threads along columns, 4 columns each
const TY: u32 = TCO / 4u;           // threads along channels, 4 channels each
const QUADS: u32 = TCO / 4u;        // vec4s per kk row of a staged tile (TCO = TQ)
const TILE: u32 = TK * QUADS;       // vec4s per staged tile (8 KiB)
const HALF: u32 = TILE / 2u;        // from kk row 4 qi to row 4 qi + TK / 2 of a staged tile
override KT: u32 = 7u;              // K
override ST: u32 = 1u;              // stride
override DT: u32 = 1u;              // dilation (conv1d_tiled)
override MT: u32 = (KT + ST - 1u) / ST;  // taps per phase (conv_transpose1d_tiled)

// The step's W and B tiles, [kk][column / 4]: W[co, kk] at wtile[kk * QUADS + co / 4][co % 4], B[kk, t] at
// btile[kk * QUADS + t / 4][t % 4], so a thread reads its 4 channels (or 4 columns) of one kk as one vec4.
var<workgroup> wtile: array<vec4<f32>, TILE>;
var<workgroup> btile: array<vec4<f32>, TILE>;

// One step's staged values of a thread: W row r's kk quads qi and qi + 4 (w0, w1) and B column r's (b0, b1).
struct Step { w0: vec4<f32>, w1: vec4<f32>, b0: vec4<f32>, b1: vec4<f32> }

// A quad's four values into kk rows i, i + QUADS, ... of a staged tile, at component c.
fn put_w(i: u32, c: u32, v: vec4<f32>) {
    wtile[i][c] = v.x;
    wtile[i + QUADS][c] = v.y;
    wtile[i + 2u * QUADS][c] = v.z;
    wtile[i + 3u * QUADS][c] = v.w;
}

fn put_b(i: u32, c: u32, v: vec4<f32>) {
    btile[i][c] = v.x;
    btile[i + QUADS][c] = v.y;
    btile[i + 2u * QUADS][c] = v.z;
    btile[i + 3u * QUADS][c] = v.w;
}

fn put_step(at: u32, c: u32, s: Step) {
    put_w(at, c, s.w0);
    put_w(at + HALF, c, s.w1);
    put_b(at, c, s.b0);
    put_b(at + HALF, c, s.b1);
}

// A thread's 4 x 4 outputs: channel rows 4 ly + i of the tile in g_i, 4 columns each.
struct Acc { g0: vec4<f32>, g1: vec4<f32>, g2: vec4<f32>, g3: vec4<f32> }

// Both kernels run the same K loop: stage a step, issue the next step's global loads, compute this one.
// Staging thread li takes W row (and B column) r = li % 64 and kk quads qi = li / 64 and qi + 4:
// consecutive threads take consecutive rows and columns, so the workgroup-memory stores fall in distinct
// banks and the x gathers of neighbouring B columns are neighbouring positions of one x row.

// Weight element kk of the W row starting at `row` (conv1d: the row is contiguous in kk), 0 where !ok.
fn w_el(row: u32, ok: bool, kk: u32) -> f32 {
    var v = 0.0;
    if (ok) { v = weight(row + kk); }
    return v;
}

// B[kk, t] of conv1d for the column whose tap 0 reads x position tpos: x[ci0 + kk / K, tpos + (kk % K) D],
// 0 outside [0, T_in) and past the dispatch's nk = (ci1 - ci0) K values.
fn x_tap(kk: u32, nk: u32, tpos: i32) -> f32 {
    let pos = tpos + i32((kk % KT) * DT);
    var v = 0.0;
    if (kk < nk && pos >= 0 && pos < i32(p.t_in)) { v = x[p.x_off + (kk / KT) * p.t_in + u32(pos)]; }
    return v;
}

// kk .. kk + 3 of conv1d's W row `row` and of its B column with tap-0 position tpos (w_el, x_tap).
fn w_quad(row: u32, has_w: bool, kk: u32, nk: u32) -> vec4<f32> {
    return vec4<f32>(w_el(row, has_w && kk < nk, kk), w_el(row, has_w && kk + 1u < nk, kk + 1u),
                     w_el(row, has_w && kk + 2u < nk, kk + 2u), w_el(row, has_w && kk + 3u < nk, kk + 3u));
}

fn x_quad(kk: u32, nk: u32, tpos: i32) -> vec4<f32> {
    return vec4<f32>(x_tap(kk, nk, tpos), x_tap(kk + 1u, nk, tpos), x_tap(kk + 2u, nk, tpos), x_tap(kk + 3u, nk, tpos));
}

// The W and B quads from kk on (kk and kk + TK / 2) of a conv1d thread: W row `row` (has_w: inside the
// dispatch's rows), B column with tap-0 position tpos.
fn conv1d_step(kk: u32, nk: u32, row: u32, has_w: bool, tpos: i32) -> Step {
    let k1 = kk + TK / 2u;
    return Step(w_quad(row, has_w, kk, nk), w_quad(row, has_w, k1, nk), x_quad(kk, nk, tpos), x_quad(k1, nk, tpos));
}

// W_r[co, kk] of the transpose: w[ci0 + kk / MT, co, r + (kk % MT) S] from `row` = the element of (ci0,
// co, r), 0 where the tap is past K (a phase with fewer taps), past nk or past the dispatch's rows.
fn wt_el(row: u32, has_w: bool, kk: u32, nk: u32, r: u32) -> f32 {
    let m = kk % MT;
    var v = 0.0;
    if (has_w && kk < nk && r + m * ST < KT) { v = weight(row + (kk / MT) * p.cout_g * KT + m * ST); }
    return v;
}

// B[kk, q] of the transpose: x[ci0 + kk / MT, q - kk % MT], 0 outside [0, T_in) and past nk.
fn xt_tap(kk: u32, nk: u32, q: u32) -> f32 {
    let l = i32(q) - i32(kk % MT);
    var v = 0.0;
    if (kk < nk && l >= 0 && l < i32(p.t_in)) { v = x[p.x_off + (kk / MT) * p.t_in + u32(l)]; }
    return v;
}

// kk .. kk + 3 of the transpose's W_r row and B column q (wt_el, xt_tap).
fn wt_quad(row: u32, has_w: bool, kk: u32, nk: u32, r: u32) -> vec4<f32> {
    return vec4<f32>(wt_el(row, has_w, kk, nk, r), wt_el(row, has_w, kk + 1u, nk, r),
                     wt_el(row, has_w, kk + 2u, nk, r), wt_el(row, has_w, kk + 3u, nk, r));
}

fn xt_quad(kk: u32, nk: u32, q: u32) -> vec4<f32> {
    return vec4<f32>(xt_tap(kk, nk, q), xt_tap(kk + 1u, nk, q), xt_tap(kk + 2u, nk, q), xt_tap(kk + 3u, nk, q));
}

fn transpose_step(kk: u32, nk: u32, row: u32, has_w: bool, r: u32, q: u32) -> Step {
    let k1 = kk + TK / 2u;
    return Step(wt_quad(row, has_w, kk, nk, r), wt_quad(row, has_w, k1, nk, r), xt_quad(kk, nk, q), xt_quad(k1, nk, q));
}

// kk row k of the staged tiles into a thread's 4 x 4 block: 2 vec4 reads, 16 FMAs.
fn mac(acc: Acc, k: u32, ly: u32, lx: u32) -> Acc {
    let a = wtile[k * QUADS + ly];
    let b = btile[k * QUADS + lx];
    return Acc(fma(vec4<f32>(a.x), b, acc.g0), fma(vec4<f32>(a.y), b, acc.g1), fma(vec4<f32>(a.z), b, acc.g2),
               fma(vec4<f32>(a.w), b, acc.g3));
}

// One step's 32 kk of a thread's block, four a loop trip (naga's while loop is not unrolled by the driver,
// so at one a trip its counter and branch are a fifth of the loop; lib/tiles.wgsl's `mac` likewise).
fn compute_step(acc: Acc, ly: u32, lx: u32) -> Acc {
    var r = acc;
    for (var k = 0u; k < TK; k += 4u) {
        r = mac(r, k, ly, lx);
        r = mac(r, k + 1u, ly, lx);
        r = mac(r, k + 2u, ly, lx);
        r = mac(r, k + 3u, ly, lx);
    }
    return r;
}

// Four consecutive outputs t .. t + 3 of dispatch row co_l (conv1d_tiled), those inside rows and T_out.
fn store_run(co_l: u32, t: u32, v: vec4<f32>) {
    if (co_l >= p.rows) { return; }
    if (t < p.t_out) { store(co_l, t, v.x); }
    if (t + 1u < p.t_out) { store(co_l, t + 1u, v.y); }
    if (t + 2u < p.t_out) { store(co_l, t + 2u, v.z); }
    if (t + 3u < p.t_out) { store(co_l, t + 3u, v.w); }
}

@compute @workgroup_size(TX, TY)
fn conv1d_tiled(grid: Grid, @builtin(local_invocation_id) lid: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    // Flat tile index = time tile * ceil(rows / TCO) + channel tile.
    let flat = group_index(grid);
    let tiles_co = (p.rows + TCO - 1u) / TCO;
    let co = (flat % tiles_co) * TCO;            // first dispatch row of the tile
    let t0 = (flat / tiles_co) * TQ;             // first output step of the tile
    if (t0 >= p.t_out) { return; }               // uniform per workgroup: the barriers below stay uniform
    split_z = grid.wid.z;
    let k_first = split_z * p.k_split;           // this split's kk, of the dispatch's kk = (ci - ci0) K + k
    let nk = min((p.ci1 - p.ci0) * KT, k_first + p.k_split);
    let r = li % TCO;
    let qi = li / TCO;
    let row = p.w_off + (co + r) * p.cin_g * KT + p.ci0 * KT;  // W row r of the tile at this dispatch's kk 0
    let has_w = co + r < p.rows;
    let tpos = i32((t0 + r) * ST) - p.pad;       // x position of B column r's tap 0
    let at = 4u * qi * QUADS + r / 4u;
    let c = r % 4u;
    let z = vec4<f32>(0.0);
    var acc = Acc(z, z, z, z);
    var st = conv1d_step(k_first + 4u * qi, nk, row, has_w, tpos);
    for (var k0 = k_first; k0 < nk; k0 += TK) {
        put_step(at, c, st);
        workgroupBarrier();
        // The next step's loads go out now and land while this step computes.
        if (k0 + TK < nk) { st = conv1d_step(k0 + TK + 4u * qi, nk, row, has_w, tpos); }
        acc = compute_step(acc, lid.y, lid.x);
        workgroupBarrier();                      // this step's reads are done before the next stores
    }
    let co_l = co + 4u * lid.y;
    let t = t0 + 4u * lid.x;
    store_run(co_l, t, acc.g0);
    store_run(co_l + 1u, t, acc.g1);
    store_run(co_l + 2u, t, acc.g2);
    store_run(co_l + 3u, t, acc.g3);
}

// Output (co_l, q S + r - P) of the transpose, if inside rows and [0, T_out).
fn store_phase(co_l: u32, q: u32, r: u32, v: f32) {
    let t = i32(q * ST + r) - p.pad;
    if (co_l < p.rows && t >= 0 && t < i32(p.t_out)) { store(co_l, u32(t), v); }
}

fn store_phase_run(co_l: u32, q: u32, r: u32, v: vec4<f32>) {
    store_phase(co_l, q, r, v.x);
    store_phase(co_l, q + 1u, r, v.y);
    store_phase(co_l, q + 2u, r, v.z);
    store_phase(co_l, q + 3u, r, v.w);
}

@compute @workgroup_size(TX, TY)
fn conv_transpose1d_tiled(grid: Grid, @builtin(local_invocation_id) lid: vec3<u32>,
                          @builtin(local_invocation_index) li: u32) {
    // Flat tile index = (q tile * S + phase) * ceil(rows / TCO) + channel tile. Outputs t = q S + r - P
    // for t in [0, T_out) have q from qb = P / S (floored) on, nq of them.
    let flat = group_index(grid);
    let tiles_co = (p.rows + TCO - 1u) / TCO;
    let co = (flat % tiles_co) * TCO;
    let phase = (flat / tiles_co) % ST;
    let qb = u32(p.pad) / ST;
    let nq = (p.t_out - 1u + u32(p.pad)) / ST + 1u - qb;
    let qt = (flat / tiles_co / ST) * TQ;        // the tile's first q, less qb
    if (qt >= nq) { return; }                    // uniform per workgroup
    let q0 = qb + qt;
    let nk = (p.ci1 - p.ci0) * MT;               // this dispatch's kk = (ci - ci0) MT + m
    let r = li % TCO;
    let qi = li / TCO;
    let row = p.w_off + (p.co0 + co + r) * KT + phase;  // w window element (ci0, co, r): w's rows are [C_out, K]
    let has_w = co + r < p.rows;
    let q = q0 + r;                              // B column r
    let at = 4u * qi * QUADS + r / 4u;
    let c = r % 4u;
    let z = vec4<f32>(0.0);
    var acc = Acc(z, z, z, z);
    var st = transpose_step(4u * qi, nk, row, has_w, phase, q);
    for (var k0 = 0u; k0 < nk; k0 += TK) {
        put_step(at, c, st);
        workgroupBarrier();
        if (k0 + TK < nk) { st = transpose_step(k0 + TK + 4u * qi, nk, row, has_w, phase, q); }
        acc = compute_step(acc, lid.y, lid.x);
        workgroupBarrier();
    }
    let co_l = co + 4u * lid.y;
    let qo = q0 + 4u * lid.x;
    store_phase_run(co_l, qo, phase, acc.g0);
    store_phase_run(co_l + 1u, qo, phase, acc.g1);
    store_phase_run(co_l + 2u, qo, phase, acc.g2);
    store_phase_run(co_l + 3u, qo, phase, acc.g3);
}

// ---- wide tiles: 128 x 128 outputs a workgroup, 8 x 8 a thread ---------------------------------------
// conv1d_tiled_wide and conv_transpose1d_tiled_wide compute what conv1d_tiled and conv_transpose1d_tiled do
// (the same GEMMs, the same flat tile index with 128 for 64), on tiles of 128 output channels x 128
// columns by 16 x 16 threads. Thread (lx, ly) holds 8 channels x 8 columns: channel rows 4 ly .. 4 ly + 3
// and 64 + 4 ly .. 64 + 4 ly + 3 of the tile, columns 4 lx .. 4 lx + 3 and 64 + 4 lx .. 64 + 4 lx + 3, so
// a kk row of the staged tiles gives it 4 vec4 reads for 64 FMAs (a 4 x 4 block: 2 for 16), and the 16
// lx of a warp read 16 consecutive vec4 of a row (no bank conflicts; its 2 ly are broadcasts). The K
// loop stages TKW kk a step: W and B as [kk][128] f32 tiles, 16 KiB at TKW = 16 (WebGPU's minimum
// workgroup storage) or 32 KiB at TKW = 32 (ops/conv.py picks it where the adapter allows). Staging
// thread li takes W row (and B column) r = li % 128 and the kk quads 2 i + li / 128 (i < TKW / 8).

const WCO: u32 = 128u;              // output channels per wide tile
const WQ: u32 = 128u;               // columns per wide tile
const WX: u32 = WQ / 8u;            // threads along columns, 8 columns each
const WY: u32 = WCO / 8u;           // threads along channels, 8 channels each
const WQUADS: u32 = WCO / 4u;       // vec4s per kk row of a staged wide tile (WCO = WQ)
const WHALF: u32 = WQUADS / 2u;     // vec4s from a thread's first 4 channels (or columns) to its second 4
override TKW: u32 = 32u;            // kk values per step of the wide tiles' K loop: 16 or 32

var<workgroup> wide_w: array<vec4<f32>, TKW * WQUADS>;  // W[co, kk] at wide_w[kk * WQUADS + co / 4][co % 4]
var<workgroup> wide_b: array<vec4<f32>, TKW * WQUADS>;  // B[kk, column] likewise

// One step's staged values of a wide-tile thread: W row r's kk quads 2 i + h (w_i, kk 8 i + 4 h ..) and B
// column r's (b_i), i < TKW / 8; w2, w3, b2, b3 are used at TKW = 32 only.
struct WideStep { w0: vec4<f32>, w1: vec4<f32>, w2: vec4<f32>, w3: vec4<f32>,
                  b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32> }

fn put_wide_w(i: u32, c: u32, v: vec4<f32>) {
    wide_w[i][c] = v.x;
    wide_w[i + WQUADS][c] = v.y;
    wide_w[i + 2u * WQUADS][c] = v.z;
    wide_w[i + 3u * WQUADS][c] = v.w;
}

fn put_wide_b(i: u32, c: u32, v: vec4<f32>) {
    wide_b[i][c] = v.x;
    wide_b[i + WQUADS][c] = v.y;
    wide_b[i + 2u * WQUADS][c] = v.z;
    wide_b[i + 3u * WQUADS][c] = v.w;
}

// A step's values into the staged tiles: `at` = kk row 4 h, vec4 r / 4 of the tile; quad i is 8 i rows on.
fn put_wide(at: u32, c: u32, s: WideStep) {
    put_wide_w(at, c, s.w0);
    put_wide_w(at + 8u * WQUADS, c, s.w1);
    put_wide_b(at, c, s.b0);
    put_wide_b(at + 8u * WQUADS, c, s.b1);
    if (TKW == 32u) {
        put_wide_w(at + 16u * WQUADS, c, s.w2);
        put_wide_w(at + 24u * WQUADS, c, s.w3);
        put_wide_b(at + 16u * WQUADS, c, s.b2);
        put_wide_b(at + 24u * WQUADS, c, s.b3);
    }
}

// A conv1d wide-tile thread's quads of the step whose kk start at kk - 4 h.
fn conv1d_wide_step(kk: u32, nk: u32, row: u32, has_w: bool, tpos: i32) -> WideStep {
    let z = vec4<f32>(0.0);
    var s = WideStep(w_quad(row, has_w, kk, nk), w_quad(row, has_w, kk + 8u, nk), z, z,
                     x_quad(kk, nk, tpos), x_quad(kk + 8u, nk, tpos), z, z);
    if (TKW == 32u) {
        s.w2 = w_quad(row, has_w, kk + 16u, nk);
        s.w3 = w_quad(row, has_w, kk + 24u, nk);
        s.b2 = x_quad(kk + 16u, nk, tpos);
        s.b3 = x_quad(kk + 24u, nk, tpos);
    }
    return s;
}

fn transpose_wide_step(kk: u32, nk: u32, row: u32, has_w: bool, r: u32, q: u32) -> WideStep {
    let z = vec4<f32>(0.0);
    var s = WideStep(wt_quad(row, has_w, kk, nk, r), wt_quad(row, has_w, kk + 8u, nk, r), z, z,
                     xt_quad(kk, nk, q), xt_quad(kk + 8u, nk, q), z, z);
    if (TKW == 32u) {
        s.w2 = wt_quad(row, has_w, kk + 16u, nk, r);
        s.w3 = wt_quad(row, has_w, kk + 24u, nk, r);
        s.b2 = xt_quad(kk + 16u, nk, q);
        s.b3 = xt_quad(kk + 24u, nk, q);
    }
    return s;
}

// A wide-tile thread's 8 x 8 outputs: cI_l holds channel row I (4 ly + I for I < 4, 64 + 4 ly + I - 4
// after) at columns 4 lx .. 4 lx + 3, cI_h at columns 64 + 4 lx .. 64 + 4 lx + 3.
struct WideAcc {
    c0l: vec4<f32>, c0h: vec4<f32>, c1l: vec4<f32>, c1h: vec4<f32>,
    c2l: vec4<f32>, c2h: vec4<f32>, c3l: vec4<f32>, c3h: vec4<f32>,
    c4l: vec4<f32>, c4h: vec4<f32>, c5l: vec4<f32>, c5h: vec4<f32>,
    c6l: vec4<f32>, c6h: vec4<f32>, c7l: vec4<f32>, c7h: vec4<f32>,
}

// kk row k of the staged wide tiles into a thread's 8 x 8 block: 4 vec4 reads, 64 FMAs.
fn mac_wide(acc: WideAcc, k: u32, ly: u32, lx: u32) -> WideAcc {
    let i = k * WQUADS;
    let a0 = wide_w[i + ly];
    let a1 = wide_w[i + WHALF + ly];
    let b0 = wide_b[i + lx];
    let b1 = wide_b[i + WHALF + lx];
    return WideAcc(
        fma(vec4<f32>(a0.x), b0, acc.c0l), fma(vec4<f32>(a0.x), b1, acc.c0h),
        fma(vec4<f32>(a0.y), b0, acc.c1l), fma(vec4<f32>(a0.y), b1, acc.c1h),
        fma(vec4<f32>(a0.z), b0, acc.c2l), fma(vec4<f32>(a0.z), b1, acc.c2h),
        fma(vec4<f32>(a0.w), b0, acc.c3l), fma(vec4<f32>(a0.w), b1, acc.c3h),
        fma(vec4<f32>(a1.x), b0, acc.c4l), fma(vec4<f32>(a1.x), b1, acc.c4h),
        fma(vec4<f32>(a1.y), b0, acc.c5l), fma(vec4<f32>(a1.y), b1, acc.c5h),
        fma(vec4<f32>(a1.z), b0, acc.c6l), fma(vec4<f32>(a1.z), b1, acc.c6h),
        fma(vec4<f32>(a1.w), b0, acc.c7l), fma(vec4<f32>(a1.w), b1, acc.c7h));
}

// One step's TKW kk of a thread's block, four a loop trip (as compute_step).
fn compute_wide(acc: WideAcc, ly: u32, lx: u32) -> WideAcc {
    var r = acc;
    for (var k = 0u; k < TKW; k += 4u) {
        r = mac_wide(r, k, ly, lx);
        r = mac_wide(r, k + 1u, ly, lx);
        r = mac_wide(r, k + 2u, ly, lx);
        r = mac_wide(r, k + 3u, ly, lx);
    }
    return r;
}

fn wide_zero() -> WideAcc {
    let z = vec4<f32>(0.0);
    return WideAcc(z, z, z, z, z, z, z, z, z, z, z, z, z, z, z, z);
}

// A conv1d wide-tile thread's outputs from dispatch row co_l = co + 4 ly and step t = t0 + 4 lx: two runs
// of 4 consecutive steps per channel row (store_run), the runs of a warp's 16 lx contiguous.
fn store_wide(co_l: u32, t: u32, a: WideAcc) {
    let t1 = t + WQ / 2u;
    let c1 = co_l + WCO / 2u;
    store_run(co_l, t, a.c0l);
    store_run(co_l, t1, a.c0h);
    store_run(co_l + 1u, t, a.c1l);
    store_run(co_l + 1u, t1, a.c1h);
    store_run(co_l + 2u, t, a.c2l);
    store_run(co_l + 2u, t1, a.c2h);
    store_run(co_l + 3u, t, a.c3l);
    store_run(co_l + 3u, t1, a.c3h);
    store_run(c1, t, a.c4l);
    store_run(c1, t1, a.c4h);
    store_run(c1 + 1u, t, a.c5l);
    store_run(c1 + 1u, t1, a.c5h);
    store_run(c1 + 2u, t, a.c6l);
    store_run(c1 + 2u, t1, a.c6h);
    store_run(c1 + 3u, t, a.c7l);
    store_run(c1 + 3u, t1, a.c7h);
}

// The same for the transpose: positions q = q0 + 4 lx .. of phase r (store_phase_run).
fn store_wide_phase(co_l: u32, q: u32, r: u32, a: WideAcc) {
    let q1 = q + WQ / 2u;
    let c1 = co_l + WCO / 2u;
    store_phase_run(co_l, q, r, a.c0l);
    store_phase_run(co_l, q1, r, a.c0h);
    store_phase_run(co_l + 1u, q, r, a.c1l);
    store_phase_run(co_l + 1u, q1, r, a.c1h);
    store_phase_run(co_l + 2u, q, r, a.c2l);
    store_phase_run(co_l + 2u, q1, r, a.c2h);
    store_phase_run(co_l + 3u, q, r, a.c3l);
    store_phase_run(co_l + 3u, q1, r, a.c3h);
    store_phase_run(c1, q, r, a.c4l);
    store_phase_run(c1, q1, r, a.c4h);
    store_phase_run(c1 + 1u, q, r, a.c5l);
    store_phase_run(c1 + 1u, q1, r, a.c5h);
    store_phase_run(c1 + 2u, q, r, a.c6l);
    store_phase_run(c1 + 2u, q1, r, a.c6h);
    store_phase_run(c1 + 3u, q, r, a.c7l);
    store_phase_run(c1 + 3u, q1, r, a.c7h);
}

@compute @workgroup_size(WX, WY)
fn conv1d_tiled_wide(grid: Grid, @builtin(local_invocation_id) lid: vec3<u32>,
                     @builtin(local_invocation_index) li: u32) {
    let flat = group_index(grid);                // time tile * ceil(rows / WCO) + channel tile
    let tiles_co = (p.rows + WCO - 1u) / WCO;
    let co = (flat % tiles_co) * WCO;
    let t0 = (flat / tiles_co) * WQ;
    if (t0 >= p.t_out) { return; }               // uniform per workgroup
    let nk = (p.ci1 - p.ci0) * KT;
    let r = li % WCO;
    let h = li / WCO;
    let row = p.w_off + (co + r) * p.cin_g * KT + p.ci0 * KT;
    let has_w = co + r < p.rows;
    let tpos = i32((t0 + r) * ST) - p.pad;
    let at = 4u * h * WQUADS + r / 4u;
    let c = r % 4u;
    var acc = wide_zero();
    var st = conv1d_wide_step(4u * h, nk, row, has_w, tpos);
    for (var k0 = 0u; k0 < nk; k0 += TKW) {
        put_wide(at, c, st);
        workgroupBarrier();
        if (k0 + TKW < nk) { st = conv1d_wide_step(k0 + TKW + 4u * h, nk, row, has_w, tpos); }
        acc = compute_wide(acc, lid.y, lid.x);
        workgroupBarrier();
    }
    store_wide(co + 4u * lid.y, t0 + 4u * lid.x, acc);
}

@compute @workgroup_size(WX, WY)
fn conv_transpose1d_tiled_wide(grid: Grid, @builtin(local_invocation_id) lid: vec3<u32>,
                               @builtin(local_invocation_index) li: u32) {
    let flat = group_index(grid);                // (q tile * S + phase) * ceil(rows / WCO) + channel tile
    let tiles_co = (p.rows + WCO - 1u) / WCO;
    let co = (flat % tiles_co) * WCO;
    let phase = (flat / tiles_co) % ST;
    let qb = u32(p.pad) / ST;
    let nq = (p.t_out - 1u + u32(p.pad)) / ST + 1u - qb;
    let qt = (flat / tiles_co / ST) * WQ;
    if (qt >= nq) { return; }                    // uniform per workgroup
    let q0 = qb + qt;
    let nk = (p.ci1 - p.ci0) * MT;
    let r = li % WCO;
    let h = li / WCO;
    let row = p.w_off + (p.co0 + co + r) * KT + phase;
    let has_w = co + r < p.rows;
    let q = q0 + r;
    let at = 4u * h * WQUADS + r / 4u;
    let c = r % 4u;
    var acc = wide_zero();
    var st = transpose_wide_step(4u * h, nk, row, has_w, phase, q);
    for (var k0 = 0u; k0 < nk; k0 += TKW) {
        put_wide(at, c, st);
        workgroupBarrier();
        if (k0 + TKW < nk) { st = transpose_wide_step(k0 + TKW + 4u * h, nk, row, has_w, phase, q); }
        acc = compute_wide(acc, lid.y, lid.x);
        workgroupBarrier();
    }
    store_wide_phase(co + 4u * lid.y, q0 + 4u * lid.x, phase, acc);
}
