// Mixture-of-experts: routing, and the selected experts' SwiGLU MLP in two dispatches that read the
// expert ids and routing weights from GPU buffers. Math in f32.
//
// route: one workgroup per token.
//   Bindings: 0 params; 1 logits: [T, E] f32; 2 weights: [T, K] f32 out; 3 experts: [T, K] i32 out.
//   Params:   t = T, e = E, k = K, norm = 1 to renormalise the top-k probabilities to sum 1.
//   Dispatch: T workgroups of WG threads (about one per expert), flat index wid.x + wid.y * nwg.x.
//   HF's router: softmax over all E in f32, top-k of the probabilities (descending; ties: lower index
//   first), then (norm_topk_prob) division by the sum of the k kept probabilities. The top-k is by rank:
//   each expert counts the experts that beat it, so the whole selection takes one barrier, not K rounds
//   of a reduction. Code in lib/moe_route.wgsl (shared with moe_sg.wgsl, the same on subgroup operations).
//
// Expert weights are stacked over experts in nn.Linear's [out, in] layout: gate_up [E, 2F, D] (rows
// [0, F) of an expert are gate_proj, [F, 2F) up_proj: transformers' fused `gate_up_proj`), down
// [E, D, F]. A stack larger than one storage binding is bound in expert pieces, one dispatch per piece:
// e_base = first expert of the piece, e_count = experts in it; a pair whose expert lies elsewhere is
// skipped by that piece. Pairs are p = t * K + j (token t, slot j).
//
// gate_up (16-bit/f32 weights) and gate_up_q8 (Q8_0 weights, int8 activations):
//   act[p, f] = silu(W[e_p, f] . x[t]) * (W[e_p, F + f] . x[t])
//   Bindings (gate_up):    0 params; 1 x: [T, D] f32; 2 w: [E_piece, 2F, D] packed per WTYPE (f32 one per
//                          u32; f16 and bf16 two per u32, element 2j in the low half); 3 experts: [T*K] i32;
//                          4 act: [T*K, F] f32.
//   Bindings (gate_up_q8): 0 params; 1 xq: [T, D/4] u32 (int8 x4); 2 xs: [T, D/32] f32; 3 wq: [E_piece, 2F, D/4]
//                          u32; 4 ws: [E_piece, 2F, D/32] f16 packed two per u32; 5 experts; 6 act.
//   Params:   pairs = T*K, n = F, d = D, k = K, e_base, e_count (ExpertParams, lib/moe_gate_up.wgsl: 12
//             words, the rest 0).
//   Dispatch: ceil(pairs * F / (WG / TPR)) workgroups (flat index), TPR threads per output row.
// gate_up_routed and gate_up_q8_routed: gate_up and gate_up_q8 for one token (decode) that read the router's
//   logits instead of expert ids: every workgroup routes the token itself (route's route_top_k, so the same
//   experts and weights), then computes its rows for the experts chosen, which saves the route dispatch
//   before them. The first workgroup of the piece holding expert 0 writes the weights and experts as route
//   does, for down and for taps. E <= WG (the wrapper's bound: every workgroup ranks all E); E_MAX, K_MAX
//   as route's.
//   gate_up_q8_routed writes act as down_q8 reads it, Q8_0 blocks (quantize_act's layout and code,
//   lib/q8_quant.wgsl, so the int8 values are those quantize_act makes of the f32 act), instead of the
//   f32 act and a quantize_act dispatch between: WG / TPR (rows a workgroup) and F multiples of 32, so a
//   workgroup holds whole blocks of one slot.
//   Bindings (gate_up_routed):    0 params; 1 x: [1, D] f32; 2 w; 3 logits: [E] f32; 4 act: [K, F] f32;
//                                 5 weights: [K] f32 out; 6 experts: [K] i32 out.
//   Bindings (gate_up_q8_routed): 0 params; 1 xq: [D/4] u32; 2 xs: [D/32] f32; 3 wq; 4 ws; 5 logits;
//                                 6 aq: [K, F/4] u32 out (int8 x4); 7 as: [K, F/32] f32 out; 8 weights;
//                                 9 experts.
//   Params:   as gate_up with pairs = K, plus route_e = E, route_norm = 1 to renormalise (norm_topk_prob).
//   Dispatch: as gate_up.
// down and down_q8 (the weighted combine of the K slots folded in):
//   out[t, n] = sum_j weights[t, j] * (W[e_tj, n] . act[t*K + j])   (+ out[t, n] when accumulate = 1)
//   Bindings (down):    0 params; 1 act: [T*K, F] f32; 2 w: [E_piece, D, F]; 3 experts; 4 weights: [T*K] f32;
//                       5 out: [T, D] f32.
//   Bindings (down_q8): 0 params; 1 aq: [T*K, F/4] u32; 2 as: [T*K, F/32] f32; 3 wq: [E_piece, D, F/4] u32;
//                       4 ws: [E_piece, D, F/32] f16 pairs; 5 experts; 6 weights; 7 out.
//   Params:   pairs = T*K, n = D, d = F, k = K, e_base, e_count, accumulate (1 on every piece after the
//             first: each piece adds the slots it holds).
//   Dispatch: ceil(T * D / (WG / TPR)) workgroups (flat index); a row's TPR threads stride over the
//             flattened (slot, word) range so a row keeps loads in flight however short F is.
// gate_up_q8x and down_q8x: gate_up_q8 and down_q8 for one token (decode) that quantize their input in
//   workgroup memory instead of reading ops/q8_0.quantize_activations' output (lib/q8_stage.wgsl's code,
//   so the int8 values are the same): x [D] (XB >= D / 32) for gate_up, act [K, F] (XB >= K * F / 32) for
//   down, re-quantized by every workgroup (decode is bound by dispatches, and x is small).
//   Bindings (gate_up_q8x): 0 params; 1 x: [1, D] f32; 2 wq; 3 ws; 4 experts; 5 act.
//   Bindings (down_q8x):    0 params; 1 act: [K, F] f32; 2 wq; 3 ws; 4 experts; 5 weights; 6 out.
//   Params and dispatch as gate_up_q8 / down_q8 with pairs = K.
// VEC = true needs D % 8 == 0 (D % 4 for f32) in gate_up and F % 8 (F % 4) in down for 16-byte weight
// words; VEC = false reads element by element (any size). The q8 entries need multiples of 32.
//
// Prefill groups the pairs by expert so that each expert's weights are read once per tile of pairs
// (tiles.wgsl) instead of once per pair; these two entries are that path's routing side.
// group: one workgroup of WG threads.
//   Bindings: 0 params; 1 experts: [P] i32; 2 order: [tiles * tm] u32 out; 3 tile_expert: [tiles] i32 out.
//   Params:   pairs = P, e = E, tm = pairs per tile, tiles = tiles the buffers hold (>= sum over experts of
//             ceil(count / tm), which P / tm + E bounds).
//   Each expert gets ceil(count / tm) consecutive tiles, in expert order; order[] lists the pairs that
//   chose it (in no particular order: each output row of a tile is computed on its own, so the order
//   changes no bit), padded to whole tiles with NO_PAIR; tile_expert[] names each tile's expert and is -1
//   past the last used tile. Pairs whose id is outside [0, E) are in no tile.
// combine: out[t, n] = sum_j weights[t, j] * y[t*K + j, n] over the slots whose expert is in [0, E).
//   Bindings: 0 params; 1 y: [T*K, D] f32; 2 experts: [T*K] i32; 3 weights: [T*K] f32; 4 out: [T, D] f32.
//   Params:   t = T, n = D, k = K, e = E. Dispatch: ceil(T * D / WG) workgroups (flat index).

override WG: u32 = 64;
override E_MAX: u32 = 128;  // route, group, routed entries: experts held in workgroup memory (>= E)
override K_MAX: u32 = 8;    // route, routed entries: kept experts held in workgroup memory (>= K)
override TPR: u32 = 16;     // threads per output row, a power of two dividing WG
override WTYPE: u32 = 2u;   // 0 f32, 1 f16, 2 bf16
override VEC: bool = true;
override XB: u32 = 64u;     // gate_up_q8x / down_q8x: blocks of the input held in workgroup memory
const UNROLL: u32 = 4u;
const NO_PAIR: u32 = 0xffffffffu;  // order[] padding

struct GroupParams { pairs: u32, e: u32, tm: u32, tiles: u32 }
struct CombineParams { t: u32, n: u32, k: u32, e: u32 }

// #include "lib/grid.wgsl"

// ---- route and the routed gate_up entries (lib/moe_route.wgsl, lib/moe_routed.wgsl; moe_sg.wgsl builds
// them on subgroup operations) ----------------------------------------------------------------------------

// #include "lib/reduce.wgsl"

// #include "lib/moe_routed.wgsl"

// ---- experts ----------------------------------------------------------------------------------------

// #include "lib/moe_gate_up.wgsl"

@group(0) @binding(3) var<storage, read> experts: array<i32>;
@group(0) @binding(4) var<storage, read> route_w: array<f32>;           // down
@group(0) @binding(5) var<storage, read_write> down_out: array<f32>;    // down

fn local_expert(p: u32) -> i32 {
    return in_piece(experts[p]);
}

@compute @workgroup_size(WG)
fn gate_up(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let r = thread_row(grid, lid, TPR);
    let g = gate_up_row(r, local_expert(pair_of(r)));
    let acc = gate_up_sums(g, lid % TPR);
    store_swiglu(lid, g, acc.x, acc.y);
}

// One element (slot j, position i within the slot's row) of a down row's flattened range: its weight
// row inside this piece (0 when the slot's expert lies in another piece), its pair, and whether it counts.
struct DownTerm { ok: bool, w_row: u32, pair: u32, i: u32 }

fn down_term(tok: u32, n: u32, flat: u32, per_slot: u32) -> DownTerm {
    let j = flat / per_slot;
    let pair = tok * ep.k + j;
    let e = local_expert(pair);
    return DownTerm(e >= 0, u32(max(e, 0)) * ep.n + n, pair, flat - j * per_slot);
}

// The down output row (token, feature) a thread works on, TPR threads a row.
struct DownRow { ok: bool, r: u32, tok: u32, n: u32 }

fn down_row(group: u32, lid: u32) -> DownRow {
    let r = group * (WG / TPR) + lid / TPR;
    return DownRow(r < (ep.pairs / ep.k) * ep.n, r, r / ep.n, r % ep.n);
}

// Weighted contribution of one 16-byte weight word of a down row.
fn down_word(t: DownTerm, words: u32) -> f32 {
    let v = route_w[t.pair] * dot_word(w[t.w_row * words + t.i], t.i, t.pair * (ep.d / 4u));
    return select(0.0, v, t.ok);
}

fn store_down(lid: u32, ok: bool, r: u32, acc: f32) {
    let total = row_sum(lid, TPR, acc);
    if (lid % TPR == 0u && ok) {
        down_out[r] = select(total, down_out[r] + total, ep.accumulate == 1u);
    }
}

@compute @workgroup_size(WG)
fn down(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let dr = down_row(group_index(grid), lid);
    let lane = lid % TPR;
    var acc = vec4<f32>(0.0);
    if (dr.ok && VEC) {
        let words = ep.d / select(8u, 4u, WTYPE == 0u);
        let total = ep.k * words;
        var f = lane;
        for (; f + (UNROLL - 1u) * TPR < total; f += UNROLL * TPR) {
            let t0 = down_term(dr.tok, dr.n, f, words);
            let t1 = down_term(dr.tok, dr.n, f + TPR, words);
            let t2 = down_term(dr.tok, dr.n, f + 2u * TPR, words);
            let t3 = down_term(dr.tok, dr.n, f + 3u * TPR, words);
            acc += vec4<f32>(down_word(t0, words), down_word(t1, words), down_word(t2, words), down_word(t3, words));
        }
        for (; f < total; f += TPR) { acc.x += down_word(down_term(dr.tok, dr.n, f, words), words); }
    } else if (dr.ok) {
        for (var f = lane; f < ep.k * ep.d; f += TPR) {
            let t = down_term(dr.tok, dr.n, f, ep.d);
            let ai = t.pair * ep.d + t.i;
            let v = route_w[t.pair] * weight(t.w_row * ep.d + t.i) * x[ai / 4u][ai % 4u];
            acc.x += select(0.0, v, t.ok);
        }
    }
    store_down(lid, dr.ok, dr.r, acc.x + acc.y + acc.z + acc.w);
}

// ---- experts, Q8_0 weights (q_x, q_xs, q_w, q_ws and q_block: lib/moe_gate_up.wgsl) --------------------

@group(0) @binding(5) var<storage, read> q_experts: array<i32>;
@group(0) @binding(6) var<storage, read_write> q_act: array<f32>;        // gate_up_q8
@group(0) @binding(6) var<storage, read> q_route_w: array<f32>;          // down_q8
@group(0) @binding(7) var<storage, read_write> q_out: array<f32>;        // down_q8

fn q_local_expert(p: u32) -> i32 {
    return in_piece(q_experts[p]);
}

@compute @workgroup_size(WG)
fn gate_up_q8(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let r = thread_row(grid, lid, TPR);
    let g = gate_up_row(r, q_local_expert(pair_of(r)));
    let acc = q_gate_up_sums(g, lid % TPR);
    let gate = row_sum(lid, TPR, acc.x);
    workgroupBarrier();
    let up = row_sum(lid, TPR, acc.y);
    if (lid % TPR == 0u && g.ok) { q_act[r] = silu(gate) * up; }
}

// Weighted block `flat` of a down row's flattened (slot, block) range.
fn q_down_block(tok: u32, n: u32, flat: u32, nb: u32) -> f32 {
    let j = flat / nb;
    let b = flat - j * nb;
    let pair = tok * ep.k + j;
    let e = q_local_expert(pair);
    let v = q_route_w[pair] * q_block(u32(max(e, 0)) * ep.n + n, b, nb, pair * nb + b);
    return select(0.0, v, e >= 0);
}

@compute @workgroup_size(WG)
fn down_q8(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let dr = down_row(group_index(grid), lid);
    let lane = lid % TPR;
    var acc = vec2<f32>(0.0);
    if (dr.ok) {
        let nb = ep.d / QK;
        let total = ep.k * nb;
        var f = lane;
        for (; f + TPR < total; f += 2u * TPR) {
            acc += vec2<f32>(q_down_block(dr.tok, dr.n, f, nb), q_down_block(dr.tok, dr.n, f + TPR, nb));
        }
        if (f < total) { acc.x += q_down_block(dr.tok, dr.n, f, nb); }
    }
    let sum = row_sum(lid, TPR, acc.x + acc.y);
    if (lane == 0u && dr.ok) { q_out[dr.r] = select(sum, q_out[dr.r] + sum, ep.accumulate == 1u); }
}

// ---- experts, Q8_0 weights, one token, input quantized in workgroup memory -----------------------------
// #include "lib/q8_stage.wgsl"

@group(0) @binding(3) var<storage, read> qx_ws: array<u32>;
@group(0) @binding(4) var<storage, read> qx_experts: array<i32>;
@group(0) @binding(5) var<storage, read_write> qx_act: array<f32>;      // gate_up_q8x
@group(0) @binding(5) var<storage, read> qx_route_w: array<f32>;        // down_q8x
@group(0) @binding(6) var<storage, read_write> qx_out: array<f32>;      // down_q8x

// The first nb blocks of binding 1 (x, or act flattened) quantized into workgroup memory; every thread of
// the workgroup calls it.
fn stage_input(lid: u32, nb: u32) {
    for (var b = lid; b < nb; b += WG) {
        let i = 8u * b;
        stage_block(b, array<vec4<f32>, 8>(x[i], x[i + 1u], x[i + 2u], x[i + 3u], x[i + 4u], x[i + 5u], x[i + 6u],
                                           x[i + 7u]));
    }
    workgroupBarrier();
}

// Block b of weight row `row` (nb blocks a row) against staged block xb.
fn qx_block(row: u32, b: u32, nb: u32, xb: u32) -> f32 {
    let si = row * nb + b;
    return staged_block(w[2u * si], w[2u * si + 1u], block_scale(qx_ws[si >> 1u], si), xb);
}

@compute @workgroup_size(WG)
fn gate_up_q8x(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let nb = ep.d / QK;
    stage_input(lid, nb);
    let r = thread_row(grid, lid, TPR);
    let lane = lid % TPR;
    let g = gate_up_row(r, in_piece(qx_experts[pair_of(r)]));
    var ga = vec2<f32>(0.0);
    var ua = vec2<f32>(0.0);
    if (g.ok) {
        var b = lane;
        for (; b + TPR < nb; b += 2u * TPR) {
            ga += vec2<f32>(qx_block(g.gate, b, nb, b), qx_block(g.gate, b + TPR, nb, b + TPR));
            ua += vec2<f32>(qx_block(g.up, b, nb, b), qx_block(g.up, b + TPR, nb, b + TPR));
        }
        if (b < nb) {
            ga.x += qx_block(g.gate, b, nb, b);
            ua.x += qx_block(g.up, b, nb, b);
        }
    }
    let gate = row_sum(lid, TPR, ga.x + ga.y);
    workgroupBarrier();
    let up = row_sum(lid, TPR, ua.x + ua.y);
    if (lane == 0u && g.ok) { qx_act[r] = silu(gate) * up; }
}

// Weighted block `flat` of a down row's (slot, block) range; the token's pairs are 0..K-1, and the staged
// act holds their blocks in that order, so `flat` is also the staged block.
fn qx_down_block(n: u32, flat: u32, nb: u32) -> f32 {
    let j = flat / nb;
    let e = in_piece(qx_experts[j]);
    let v = qx_route_w[j] * qx_block(u32(max(e, 0)) * ep.n + n, flat - j * nb, nb, flat);
    return select(0.0, v, e >= 0);
}

@compute @workgroup_size(WG)
fn down_q8x(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let nb = ep.d / QK;
    let total = ep.k * nb;
    stage_input(lid, total);
    let dr = down_row(group_index(grid), lid);
    let lane = lid % TPR;
    var acc = vec2<f32>(0.0);
    if (dr.ok) {
        var f = lane;
        for (; f + TPR < total; f += 2u * TPR) {
            acc += vec2<f32>(qx_down_block(dr.n, f, nb), qx_down_block(dr.n, f + TPR, nb));
        }
        if (f < total) { acc.x += qx_down_block(dr.n, f, nb); }
    }
    let sum = row_sum(lid, TPR, acc.x + acc.y);
    if (lane == 0u && dr.ok) { qx_out[dr.r] = select(sum, qx_out[dr.r] + sum, ep.accumulate == 1u); }
}

// ---- grouping pairs by expert (prefill) --------------------------------------------------------------

@group(0) @binding(0) var<uniform> gp: GroupParams;
@group(0) @binding(1) var<storage, read> g_experts: array<i32>;
@group(0) @binding(2) var<storage, read_write> g_order: array<u32>;
@group(0) @binding(3) var<storage, read_write> g_tile_expert: array<i32>;

var<workgroup> g_count: array<atomic<u32>, E_MAX>;  // pairs per expert, then a cursor while placing them
var<workgroup> g_first: array<u32, E_MAX>;          // first order[] slot of each expert
var<workgroup> g_scan: array<u32, WG>;

fn g_expert(p: u32) -> i32 {
    let id = g_experts[p];
    return select(-1, id, id >= 0 && u32(id) < gp.e);
}

@compute @workgroup_size(WG)
fn group(@builtin(local_invocation_index) lid: u32) {
    for (var e = lid; e < gp.e; e += WG) { atomicStore(&g_count[e], 0u); }
    workgroupBarrier();
    for (var p = lid; p < gp.pairs; p += WG) {
        let e = g_expert(p);
        if (e >= 0) { atomicAdd(&g_count[e], 1u); }
    }
    workgroupBarrier();

    // Tiles per expert, scanned: each thread sums a contiguous run of experts, the runs are scanned
    // across the workgroup (Hillis-Steele), then each thread numbers its own run's tiles.
    let run = (gp.e + WG - 1u) / WG;
    let e0 = min(lid * run, gp.e);
    let e1 = min(e0 + run, gp.e);
    var own = 0u;
    for (var e = e0; e < e1; e++) { own += (atomicLoad(&g_count[e]) + gp.tm - 1u) / gp.tm; }
    g_scan[lid] = own;
    workgroupBarrier();
    for (var s = 1u; s < WG; s = s * 2u) {
        var add = 0u;
        if (lid >= s) { add = g_scan[lid - s]; }
        workgroupBarrier();
        g_scan[lid] += add;
        workgroupBarrier();
    }
    let used = g_scan[WG - 1u];  // tiles in use
    var tile = g_scan[lid] - own;
    for (var e = e0; e < e1; e++) {
        let count = atomicLoad(&g_count[e]);
        let tiles = (count + gp.tm - 1u) / gp.tm;
        g_first[e] = tile * gp.tm;
        for (var i = 0u; i < tiles; i++) { g_tile_expert[tile + i] = i32(e); }
        for (var s = tile * gp.tm + count; s < (tile + tiles) * gp.tm; s++) { g_order[s] = NO_PAIR; }
        tile += tiles;
    }
    for (var i = used + lid; i < gp.tiles; i += WG) { g_tile_expert[i] = -1; }
    workgroupBarrier();
    for (var e = lid; e < gp.e; e += WG) { atomicStore(&g_count[e], 0u); }
    workgroupBarrier();
    for (var p = lid; p < gp.pairs; p += WG) {
        let e = g_expert(p);
        if (e >= 0) { g_order[g_first[e] + atomicAdd(&g_count[e], 1u)] = p; }
    }
}

@group(0) @binding(0) var<uniform> cp: CombineParams;
@group(0) @binding(1) var<storage, read> c_y: array<f32>;
@group(0) @binding(2) var<storage, read> c_experts: array<i32>;
@group(0) @binding(3) var<storage, read> c_weights: array<f32>;
@group(0) @binding(4) var<storage, read_write> c_out: array<f32>;

@compute @workgroup_size(WG)
fn combine(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = group_index(grid) * WG + lid;
    if (i >= cp.t * cp.n) { return; }
    let t = i / cp.n;
    let n = i - t * cp.n;
    var acc = 0.0;
    for (var j = 0u; j < cp.k; j++) {
        let pair = t * cp.k + j;
        let id = c_experts[pair];
        if (id >= 0 && u32(id) < cp.e) { acc += c_weights[pair] * c_y[pair * cp.n + n]; }
    }
    c_out[i] = acc;
}
