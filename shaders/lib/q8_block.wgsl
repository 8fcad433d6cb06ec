// Q8_0 blocks (formats/q8_0.py): 32 int8 values in two 16-byte words (four a u32, element 4j in the low
// byte) and one f16 scale, the scales of consecutive blocks packed two per u32 (block 2j in the low half).
// Activations quantized per block the same way (quantize_act) make a block's dot product exact in i32.

// The 32 products of a block of weights (w0, w1) and one of int8 activations (x0, x1), summed in i32.
fn block_dot_i8(w0: vec4<u32>, w1: vec4<u32>, x0: vec4<u32>, x1: vec4<u32>) -> i32 {
    return dot4I8Packed(w0.x, x0.x) + dot4I8Packed(w0.y, x0.y) + dot4I8Packed(w0.z, x0.z) + dot4I8Packed(w0.w, x0.w)
         + dot4I8Packed(w1.x, x1.x) + dot4I8Packed(w1.y, x1.y) + dot4I8Packed(w1.z, x1.z) + dot4I8Packed(w1.w, x1.w);
}

// The scale of block `block` from the u32 that holds it (scales[block >> 1]).
fn block_scale(word: u32, block: u32) -> f32 {
    let h = unpack2x16float(word);
    return select(h.x, h.y, (block & 1u) == 1u);
}
