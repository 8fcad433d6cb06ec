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
// Dispatch (conv1d, conv_transpose1d): one thread per output element of the dispatch's rows, flat index
//   group_index(grid) * WG + lid over rows x T_out (groups_for), time fastest, so a workgroup's
//   threads mostly share one output channel (its weights are one broadcast load) and read neighbouring x.
// Entry `conv1d_tiled` (groups = 1): the same sums as conv1d, one workgroup per tile of TCO output
//   channels x TT output steps, flat tile index wid.x + wid.y * nwg.x (groups_for) = time tile *
//   ceil(rows / TCO) + channel tile. It walks the input channels CI at a time: the CI x XW window of x
//   the tile's taps read, and the tile's TCO x CI x K weights (widened to f32), go to workgroup memory
//   once, and every thread then computes PC x PT outputs from them, so each x value loaded is used by
//   TCO output channels and each weight by TT steps. K, stride and dilation are override constants
//   (KT, ST, DT) here: they size the window and unroll the tap loop; params' k, stride, dilation must
//   match them. Threads TCP x TTP; thread (c, s) owns channels c + i TCP and steps s + j TTP.
// Entry `conv_transpose1d_tiled`: conv_transpose1d's sums with conv1d_tiled's tiles, walk and threads,
//   where TTP must be a multiple of the stride ST (so a thread's PT outputs share their taps); the
//   window is the XWT input positions a tile's outputs read, about (TT + K) / S. DT unused.

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
    flags: u32, _p0: u32, _p1: u32, _p2: u32,
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

// Stores one output: the first piece of input channels writes sum + bias (+ residual), later ones add.
fn store(co_l: u32, t: u32, acc: f32) {
    let i = co_l * p.t_out + t;
    if ((p.flags & FLAG_ACCUMULATE) != 0u) {
        y[p.y_off + i] += acc;
        return;
    }
    var v = acc;
    if ((p.flags & FLAG_BIAS) != 0u) { v += bias[p.co0 + co_l]; }
    if ((p.flags & FLAG_RESIDUAL) != 0u) { v += res[p.r_off + i]; }
    y[p.y_off + i] = v;
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

// ---- conv1d_tiled ---------------------------------------------------------------------------------

const PC: u32 = 4u;                    // output channels per thread
const PT: u32 = 4u;                    // output steps per thread
override TCP: u32 = 16u;               // threads along channels
override TTP: u32 = 16u;               // threads along time
override CI: u32 = 4u;                 // input channels per step of the walk
override KT: u32 = 7u;                 // K
override ST: u32 = 1u;                 // stride
override DT: u32 = 1u;                 // dilation
override TCO: u32 = PC * TCP;          // output channels per tile
override TT: u32 = PT * TTP;           // output steps per tile
override TWG: u32 = TCP * TTP;         // threads per workgroup
override XW: u32 = (TT - 1u) * ST + (KT - 1u) * DT + 1u;  // x positions one input channel's taps read
override XWT: u32 = (TT + KT - 2u) / ST + 2u;            // conv_transpose1d_tiled's: input positions a tile reads
// Every named override stays above the first override-sized array: naga 29 gives such an array's size an
// unnamed override of its own, and panics when it meets one before a named override it still has to resolve.

var<workgroup> ws: array<f32, CI * KT * TCO>;  // [CI * KT][TCO]: weight (co, ci, k) at (ci * KT + k) * TCO + co
var<workgroup> xs: array<f32, CI * XW>;        // [CI][XW]: x (ci, window position)

// The tile of flat workgroup index `flat` and thread lid's place in it (both kernels' tiling).
struct Tile {
    ok: bool,    // the tile starts before T_out (uniform per workgroup)
    co: u32,     // first output row (in this dispatch) of the tile
    t0: u32,     // first output step of the tile
    tc: u32,     // the thread's channel: it owns channels co + tc + i TCP
    tt: u32,     // the thread's step: it owns steps t0 + tt + j TTP
}

fn tile_of(flat: u32, lid: u32) -> Tile {
    let tiles_co = (p.rows + TCO - 1u) / TCO;
    let t0 = (flat / tiles_co) * TT;
    return Tile(t0 < p.t_out, (flat % tiles_co) * TCO, t0, lid / TTP, lid % TTP);
}

// Element e of a tile's x window [CI][width] for the input channels from c0: x of channel c0 + e / width
// at position first + e % width, 0 outside [0, T_in) and past the dispatch's channels.
fn x_window(c0: u32, e: u32, width: u32, first: i32) -> f32 {
    let ci = c0 + e / width;
    let pos = first + i32(e % width);
    if (ci < p.ci1 && pos >= 0 && pos < i32(p.t_in)) {
        return x[p.x_off + (ci - p.ci0) * p.t_in + u32(pos)];
    }
    return 0.0;
}

// Stores a thread's PC x PT outputs, those inside the dispatch's rows and T_out.
fn store_tile(tile: Tile, acc: array<array<f32, PT>, PC>) {
    for (var i = 0u; i < PC; i++) {
        let co_l = tile.co + tile.tc + i * TCP;
        if (co_l >= p.rows) { continue; }
        for (var j = 0u; j < PT; j++) {
            let t = tile.t0 + tile.tt + j * TTP;
            if (t < p.t_out) { store(co_l, t, acc[i][j]); }
        }
    }
}

@compute @workgroup_size(TWG)
fn conv1d_tiled(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let tile = tile_of(group_index(grid), lid);
    if (!tile.ok) { return; }                    // uniform per workgroup: the barriers below stay uniform
    let x0 = i32(tile.t0 * ST) - p.pad;          // x position of window element 0
    let row_w = p.cin_g * KT;                    // weights per output channel
    var acc: array<array<f32, PT>, PC>;
    for (var c0 = p.ci0; c0 < p.ci1; c0 += CI) {
        workgroupBarrier();                      // the previous step's reads of ws and xs are done
        for (var e = lid; e < CI * KT * TCO; e += TWG) {
            let co_l = e / (CI * KT);
            let r = e % (CI * KT);               // ci * KT + k within the step
            let ci = c0 + r / KT;
            var v = 0.0;
            if (tile.co + co_l < p.rows && ci < p.ci1) {
                v = weight(p.w_off + (tile.co + co_l) * row_w + ci * KT + r % KT);
            }
            ws[r * TCO + co_l] = v;
        }
        for (var e = lid; e < CI * XW; e += TWG) { xs[e] = x_window(c0, e, XW, x0); }
        workgroupBarrier();
        for (var ci = 0u; ci < CI; ci++) {
            for (var k = 0u; k < KT; k++) {
                var wv: array<f32, PC>;
                for (var i = 0u; i < PC; i++) { wv[i] = ws[(ci * KT + k) * TCO + tile.tc + i * TCP]; }
                for (var j = 0u; j < PT; j++) {
                    let xv = xs[ci * XW + (tile.tt + j * TTP) * ST + k * DT];
                    for (var i = 0u; i < PC; i++) { acc[i][j] += wv[i] * xv; }
                }
            }
        }
    }
    store_tile(tile, acc);
}

// ---- conv_transpose1d_tiled -------------------------------------------------------------------------

fn floor_div(n: i32, d: i32) -> i32 {
    return select(-((-n + d - 1) / d), n / d, n >= 0);
}
var<workgroup> xst: array<f32, CI * XWT>;       // [CI][XWT]

@compute @workgroup_size(TWG)
fn conv_transpose1d_tiled(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let tile = tile_of(group_index(grid), lid);
    if (!tile.ok) { return; }                    // uniform per workgroup
    // Input position of window element 0: that of the tile's first output's last tap (k = K - 1), floored.
    let l_min = floor_div(i32(tile.t0) + p.pad - i32(KT - 1u), i32(ST));
    let row_w = p.cout_g * KT;                   // weights per input channel: [C_out, K]
    var acc: array<array<f32, PT>, PC>;
    for (var c0 = p.ci0; c0 < p.ci1; c0 += CI) {
        workgroupBarrier();
        for (var e = lid; e < CI * KT * TCO; e += TWG) {
            let ci = c0 + e / (KT * TCO);
            let r = e % (KT * TCO);              // co_l * KT + k: a row of w is [C_out, K]
            let co_l = r / KT;
            let kk = r % KT;
            var v = 0.0;
            if (tile.co + co_l < p.rows && ci < p.ci1) {
                v = weight(p.w_off + (ci - p.ci0) * row_w + (p.co0 + tile.co + co_l) * KT + kk);
            }
            ws[((e / (KT * TCO)) * KT + kk) * TCO + co_l] = v;
        }
        for (var e = lid; e < CI * XWT; e += TWG) { xst[e] = x_window(c0, e, XWT, l_min); }
        workgroupBarrier();
        // TTP is a multiple of the stride, so all PT outputs of a thread have the same phase r and the
        // same taps k = r + m S: each weight read serves PT outputs, each x read PC channels.
        let tp = tile.t0 + tile.tt + u32(p.pad);
        let r = tp % ST;
        let lr = i32(tp / ST) - l_min;           // window index of output j = 0's tap m = 0
        for (var ci = 0u; ci < CI; ci++) {
            for (var m = 0u; m * ST + r < KT; m++) {
                var wv: array<f32, PC>;
                for (var i = 0u; i < PC; i++) { wv[i] = ws[(ci * KT + m * ST + r) * TCO + tile.tc + i * TCP]; }
                let xb = i32(ci * XWT) + lr - i32(m);
                for (var j = 0u; j < PT; j++) {
                    let xv = xst[u32(xb + i32(j * (TTP / ST)))];
                    for (var i = 0u; i < PC; i++) { acc[i][j] += wv[i] * xv; }
                }
            }
        }
    }
    store_tile(tile, acc);
}
