// Element e of weight rows bound by the including shader as `w: array<vec4<u32>>` (16-byte loads on the
// fast path), packed per WTYPE: f32 one per u32, f16 and bf16 two per u32. For the ragged-K entry points,
// which cannot use whole 16-byte words per row.
// #include "lib/packed16.wgsl"

fn weight(e: u32) -> f32 {
    let word = w[e / (4u * select(2u, 1u, WTYPE == 0u))];
    if (WTYPE == 0u) { return bitcast<f32>(word[e % 4u]); }
    let u = word[(e / 2u) % 4u];
    return half16(u, (e & 1u) == 1u);
}
