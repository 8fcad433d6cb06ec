// tiles_q8: the prefill's tiled matmul with a row gather (dense linears and the MoE experts; lib/tile_gather.wgsl
// has the contract, bindings and dispatch, lib/tiles.wgsl the entry), with Q8_0 weights dequantized into the
// tile: activations stay f32, so the error is the weights' alone (the tuning table's q8_prefill_path "f32";
// tiles_dot4.wgsl is the int8 path). kdim % 32 == 0.
//   Bindings 5 wq: [E_piece, rows per matrix, kdim/4] u32 (int8 x4); 6 ws: [E_piece, rows, kdim/32] f16
//   scales packed two per u32.

@group(0) @binding(5) var<storage, read> wq: array<u32>;
@group(0) @binding(6) var<storage, read> ws: array<u32>;

// #include "lib/tiles.wgsl"

// #include "lib/q8_block.wgsl"

fn w_quad(row: u32, q: u32) -> vec4<f32> {
    let si = row * (tp.kdim / 32u) + q / 8u;
    return vec4<f32>(unpack4xI8(wq[row * (tp.kdim / 4u) + q])) * block_scale(ws[si >> 1u], si);
}
