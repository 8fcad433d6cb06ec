// What rope.wgsl's entries and lib/qk_norm_rope.wgsl's share: params, bindings 0-4 (and the in-place view
// of binding 1) and the stream of a pair under these params; the math is lib/rotary.wgsl's (rope.wgsl's
// header describes it all). The including shader declares `override WG`.

struct Params {
    n_tokens: u32, n_heads: u32, half: u32, pos_stride: u32,
    sec_h: u32, sec_w: u32, mode: u32, b1: u32,
    b2: u32, n_heads2: u32, eps_bits: u32, max_len: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> positions: array<i32>;
@group(0) @binding(3) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
// The in-place entry's view of binding 1 (only `inplace` uses it, only `main` uses `x` and `out`).
@group(0) @binding(1) var<storage, read_write> xio: array<f32>;

// #include "lib/rotary.wgsl"

fn sections() -> Sections {
    return Sections(p.mode, p.sec_h, p.sec_w, p.b1, p.b2);
}

fn stream(i: u32) -> u32 {
    return mrope_stream(sections(), i);
}
