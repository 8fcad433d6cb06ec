// 16-bit floats packed two to a u32, element 2j in the low half: f16 when WTYPE == 1, bf16 when
// WTYPE == 2 (bf16 widens by a shift). The including shader declares `override WTYPE` (0 f32, 1 f16, 2 bf16);
// f32 data, one value per u32, is read with bitcast and never reaches these.

fn lo(u: u32) -> f32 {
    if (WTYPE == 1u) { return unpack2x16float(u).x; }
    return bitcast<f32>(u << 16u);
}

fn hi(u: u32) -> f32 {
    if (WTYPE == 1u) { return unpack2x16float(u).y; }
    return bitcast<f32>(u & 0xffff0000u);
}

// Element 2j (odd = false) or 2j + 1 (odd = true) of word u.
fn half16(u: u32, odd: bool) -> f32 {
    return select(lo(u), hi(u), odd);
}
