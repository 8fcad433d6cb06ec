// The experts' params and gate_up rows (moe.wgsl's header describes the entries): the 16-bit (x, w, act)
// and Q8_0 (xq, xs, wq, ws) bindings and the row sums, shared by moe.wgsl's gate_up / gate_up_q8 and the
// routed entries (lib/moe_routed.wgsl, in moe.wgsl and moe_sg.wgsl), so a row is the same f32 sum in all
// of them at the same TPR. The including shader declares `override WG`, TPR, WTYPE and VEC and includes
// lib/grid.wgsl.

// route_e, route_norm: the routed entries' router (E, norm_topk_prob); 0 elsewhere.
struct ExpertParams {
    pairs: u32, n: u32, d: u32, k: u32, e_base: u32, e_count: u32, accumulate: u32, route_e: u32,
    route_norm: u32, _p0: u32, _p1: u32, _p2: u32,
}

const QK: u32 = 32u;  // values per Q8_0 block

@group(0) @binding(0) var<uniform> ep: ExpertParams;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;           // gate_up: x; down: act
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> act_out: array<f32>;     // gate_up

@group(0) @binding(1) var<storage, read> q_x: array<vec4<u32>>;          // int8 activations
@group(0) @binding(2) var<storage, read> q_xs: array<f32>;               // their block scales
@group(0) @binding(3) var<storage, read> q_w: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> q_ws: array<u32>;

// #include "lib/rows.wgsl"

// #include "lib/dot_word.wgsl"

// #include "lib/weight_rows.wgsl"

// #include "lib/silu.wgsl"

// A Q8_0 block is two 16-byte words of int8 quants and one f16 scale; activations are quantized per
// block of 32 the same way (ops/q8_0.quantize_activations), so a block's dot product is exact in i32.
// #include "lib/q8_block.wgsl"

// Expert id `id` as an index inside this piece, or -1 when it lies in another piece (or is no expert).
fn in_piece(id: i32) -> i32 {
    let e = id - i32(ep.e_base);
    return select(-1, e, e >= 0 && u32(e) < ep.e_count);
}

// One gate_up output row: pair and f, and the rows of the gate and up halves inside this piece.
struct GateUpRow { ok: bool, out: u32, tok: u32, gate: u32, up: u32 }

// Pair of output row r (clamped, so that a row past the end still reads a valid expert id).
fn pair_of(r: u32) -> u32 {
    return min(r / ep.n, ep.pairs - 1u);
}

// Row r, whose pair's expert is e inside this piece (in_piece).
fn gate_up_row(r: u32, e: i32) -> GateUpRow {
    let pair = pair_of(r);
    let gate = u32(max(e, 0)) * 2u * ep.n + r % ep.n;
    return GateUpRow(r < ep.pairs * ep.n && e >= 0, r, pair / ep.k, gate, gate + ep.n);
}

// The row sums of the gate and up halves, then the SwiGLU product. Uniform control flow (barriers).
fn store_swiglu(lid: u32, g: GateUpRow, gate_acc: f32, up_acc: f32) {
    let gate = row_sum(lid, TPR, gate_acc);
    workgroupBarrier();  // row_sum's workgroup array is reused right away
    let up = row_sum(lid, TPR, up_acc);
    if (lid % TPR == 0u && g.ok) { act_out[g.out] = silu(gate) * up; }
}

// A thread's share (lane of TPR) of row g's gate and up dot products, 16-bit or f32 weights.
fn gate_up_sums(g: GateUpRow, lane: u32) -> vec2<f32> {
    var ga = vec4<f32>(0.0);
    var ua = vec4<f32>(0.0);
    if (g.ok && VEC) {
        let words = ep.d / select(8u, 4u, WTYPE == 0u);  // 16-byte weight words per row
        let gb = g.gate * words;
        let ub = g.up * words;
        let xb = g.tok * (ep.d / 4u);
        var j = lane;
        for (; j + TPR < words; j += 2u * TPR) {
            // Issue the four loads first so they are in flight together.
            let g0 = w[gb + j];
            let g1 = w[gb + j + TPR];
            let u0 = w[ub + j];
            let u1 = w[ub + j + TPR];
            ga += vec4<f32>(dot_word(g0, j, xb), dot_word(g1, j + TPR, xb), 0.0, 0.0);
            ua += vec4<f32>(dot_word(u0, j, xb), dot_word(u1, j + TPR, xb), 0.0, 0.0);
        }
        if (j < words) {
            ga.z += dot_word(w[gb + j], j, xb);
            ua.z += dot_word(w[ub + j], j, xb);
        }
    } else if (g.ok) {
        for (var d = lane; d < ep.d; d += TPR) {
            let xi = g.tok * ep.d + d;
            let xv = x[xi / 4u][xi % 4u];
            ga.x += weight(g.gate * ep.d + d) * xv;
            ua.x += weight(g.up * ep.d + d) * xv;
        }
    }
    return vec2<f32>(ga.x + ga.y + ga.z + ga.w, ua.x + ua.y + ua.z + ua.w);
}

// Block b of weight row `row` against block xb of the activations (each row has `nb` blocks).
fn q_block(row: u32, b: u32, nb: u32, xb: u32) -> f32 {
    let wi = 2u * (row * nb + b);
    let w0 = q_w[wi];
    let w1 = q_w[wi + 1u];
    let s = block_dot_i8(w0, w1, q_x[2u * xb], q_x[2u * xb + 1u]);
    let si = row * nb + b;
    return f32(s) * (block_scale(q_ws[si >> 1u], si) * q_xs[xb]);
}

// A thread's share of row g's gate and up dot products, Q8_0 weights and int8 x.
fn q_gate_up_sums(g: GateUpRow, lane: u32) -> vec2<f32> {
    var ga = vec2<f32>(0.0);
    var ua = vec2<f32>(0.0);
    if (g.ok) {
        let nb = ep.d / QK;
        let xb = g.tok * nb;
        var b = lane;
        for (; b + TPR < nb; b += 2u * TPR) {
            ga += vec2<f32>(q_block(g.gate, b, nb, xb + b), q_block(g.gate, b + TPR, nb, xb + b + TPR));
            ua += vec2<f32>(q_block(g.up, b, nb, xb + b), q_block(g.up, b + TPR, nb, xb + b + TPR));
        }
        if (b < nb) {
            ga.x += q_block(g.gate, b, nb, xb + b);
            ua.x += q_block(g.up, b, nb, xb + b);
        }
    }
    return vec2<f32>(ga.x + ga.y, ua.x + ua.y);
}
