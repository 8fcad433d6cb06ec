// The routed gate_up entries (moe.wgsl's header describes them): gate_up and gate_up_q8 for one token that
// route it themselves, every workgroup from the router's logits with lib/moe_route.wgsl's route_top_k,
// instead of reading the expert ids of a route dispatch before them. As moe.wgsl (reductions in workgroup
// memory) and moe_sg.wgsl (subgroup operations) include it; the including shader declares the overrides of
// lib/moe_gate_up.wgsl and lib/moe_route.wgsl and includes lib/grid.wgsl and one of the reduction files.
// #include "lib/moe_route.wgsl"

// #include "lib/moe_gate_up.wgsl"

// #include "lib/q8_quant.wgsl"

@group(0) @binding(3) var<storage, read> ru_logits: array<f32>;          // gate_up_routed
@group(0) @binding(5) var<storage, read_write> ru_weights: array<f32>;
@group(0) @binding(6) var<storage, read_write> ru_experts: array<i32>;

@group(0) @binding(5) var<storage, read> rq_logits: array<f32>;          // gate_up_q8_routed
@group(0) @binding(6) var<storage, read_write> rq_act_q: array<vec4<u32>>;
@group(0) @binding(7) var<storage, read_write> rq_act_d: array<f32>;
@group(0) @binding(8) var<storage, read_write> rq_weights: array<f32>;
@group(0) @binding(9) var<storage, read_write> rq_experts: array<i32>;

var<workgroup> rq_rows: array<vec4<f32>, WG / 4u>;  // gate_up_q8_routed: the workgroup's act values, 4 a vec4

// The workgroup that writes the route for the layer's later dispatches and taps: the first of the piece
// holding expert 0 (every piece routes, only that one writes).
fn writes_route(grid: Grid) -> bool {
    return group_index(grid) == 0u && ep.e_base == 0u;
}

// Row r's gate_up row for the expert its slot (pair) was routed to.
fn routed_row(r: u32) -> GateUpRow {
    return gate_up_row(r, in_piece(i32(top_i[pair_of(r)])));
}

@compute @workgroup_size(WG)
fn gate_up_routed(grid: Grid, ln: Lanes) {
    for (var e = ln.lid; e < ep.route_e; e += WG) { route_set(e, ru_logits[e]); }
    route_top_k(ln, ep.route_e, ep.k);
    let g = routed_row(thread_row(grid, ln.lid, TPR));
    let acc = gate_up_sums(g, ln.lid % TPR);
    store_swiglu(ln.lid, g, acc.x, acc.y);
    if (writes_route(grid) && ln.lid < ep.k) {
        ru_weights[ln.lid] = route_weight(ln.lid, ep.k, ep.route_norm == 1u);
        ru_experts[ln.lid] = i32(top_i[ln.lid]);
    }
}

// act[r] = silu(gate) * up as gate_up_q8 stores it, then quantized here by quantize_act's code (quant_block)
// into the Q8_0 blocks that down_q8 reads: the workgroup's WG / TPR rows (a multiple of 32, F too) are whole
// blocks of one slot each, so no act value leaves the workgroup before it is quantized.
@compute @workgroup_size(WG)
fn gate_up_q8_routed(grid: Grid, ln: Lanes) {
    let lid = ln.lid;
    for (var e = lid; e < ep.route_e; e += WG) { route_set(e, rq_logits[e]); }
    route_top_k(ln, ep.route_e, ep.k);
    let rows = WG / TPR;
    let g = routed_row(thread_row(grid, lid, TPR));
    let acc = q_gate_up_sums(g, lid % TPR);
    let gate = row_sum(lid, TPR, acc.x);
    workgroupBarrier();
    let up = row_sum(lid, TPR, acc.y);
    let i = lid / TPR;
    if (lid % TPR == 0u) { rq_rows[i / 4u][i % 4u] = silu(gate) * up; }
    workgroupBarrier();
    if (lid < rows / QK) {
        let first = routed_row(group_index(grid) * rows + lid * QK);  // the block's first row: its slot's expert
        if (first.ok) {
            let v = 8u * lid;
            let qb = quant_block(array<vec4<f32>, 8>(rq_rows[v], rq_rows[v + 1u], rq_rows[v + 2u], rq_rows[v + 3u],
                                                     rq_rows[v + 4u], rq_rows[v + 5u], rq_rows[v + 6u], rq_rows[v + 7u]));
            let blk = first.out / QK;
            rq_act_q[2u * blk] = qb.q0;
            rq_act_q[2u * blk + 1u] = qb.q1;
            rq_act_d[blk] = qb.d;
        }
    }
    if (writes_route(grid) && lid < ep.k) {
        rq_weights[lid] = route_weight(lid, ep.k, ep.route_norm == 1u);
        rq_experts[lid] = i32(top_i[lid]);
    }
}
