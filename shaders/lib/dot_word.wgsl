// Dot product of one 16-byte weight word (packed per WTYPE: four f32, or eight f16/bf16) with the x
// values it covers. The including shader binds `x: array<vec4<f32>>` and declares `override WTYPE`;
// j indexes 16-byte weight words within a row and xbase is the vec4 index of that row's x.
// #include "lib/packed16.wgsl"

fn dot_word(u: vec4<u32>, j: u32, xbase: u32) -> f32 {
    if (WTYPE == 0u) { return dot(bitcast<vec4<f32>>(u), x[xbase + j]); }
    return dot(vec4<f32>(lo(u.x), hi(u.x), lo(u.y), hi(u.y)), x[xbase + 2u * j])
         + dot(vec4<f32>(lo(u.z), hi(u.z), lo(u.w), hi(u.w)), x[xbase + 2u * j + 1u]);
}
