// tiles: the prefill's tiled matmul with a row gather (dense linears and the MoE experts; lib/tile_gather.wgsl
// has the contract, bindings and dispatch, lib/tiles.wgsl the entry), with f32/f16/bf16 weights.
//   Binding 5 w: [E_piece, rows per matrix, kdim] packed per WTYPE (f32 one per u32; f16 and bf16 two
//   per u32, element 2j in the low half).

override WTYPE: u32 = 2u;  // 0 f32, 1 f16, 2 bf16

@group(0) @binding(5) var<storage, read> w: array<vec4<u32>>;

// #include "lib/tiles.wgsl"

// #include "lib/weight_rows.wgsl"

fn w_quad(row: u32, q: u32) -> vec4<f32> {
    if (VEC) {
        let i = row * (tp.kdim / 4u) + q;  // quad index: one 16-byte word of f32, half a word of 16-bit
        if (WTYPE == 0u) { return bitcast<vec4<f32>>(w[i]); }
        let word = w[i / 2u];
        let h = select(word.xy, word.zw, (i & 1u) == 1u);
        return vec4<f32>(lo(h.x), hi(h.x), lo(h.y), hi(h.y));
    }
    let k = 4u * q;
    let e = row * tp.kdim + k;
    return vec4<f32>(w_at(e, k < tp.kdim), w_at(e + 1u, k + 1u < tp.kdim), w_at(e + 2u, k + 2u < tp.kdim),
                     w_at(e + 3u, k + 3u < tp.kdim));
}

fn w_at(e: u32, ok: bool) -> f32 {
    var v = 0.0;
    if (ok) { v = weight(e); }
    return v;
}
