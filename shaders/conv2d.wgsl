// conv2d: nn.Conv2d (groups 1, square kernel, one stride and one zero padding for both axes) over a batch of
// f32 images [N, C_in, H, W], as the AuT audio encoder's stem runs it on the chunks of a mel spectrogram
// (H mel bins, W frames). Weights f32, f16 or bf16 (WTYPE), read as u32 words (16-bit ones two to a word,
// element 2j in the low half); f32 sums.
//
// Entry `main`: y[n, co, i, j] = bias[co] + sum_{ci, a < K, b < K} w[co, ci, a, b] * x[n, ci, i*S + a - P, j*S + b - P]
//   with x = 0 outside the image; H_out = (H + 2P - K) / S + 1, W_out likewise. Weight [C_out, C_in, K, K]
//   as torch stores it.
//   With `frames` = 1, y is written as [N, W_out, C_out * H_out] instead: y[n, j, co * H_out + i], the stem's
//   last output as one row of features per frame, the order permute(0, 3, 1, 2).view(b, t, c * f) gives in
//   the encoder (so conv_out reads it with no transpose).
//
// Bindings: 0 params; 1 x: f32; 2 w: u32 words (WTYPE); 3 bias: [C_out] f32; 4 y: f32, read_write.
// Params (sizes in elements):
//   n, c_in, h_in, w_in:       N, C_in, H, W of x
//   c_out, h_out, w_out:       C_out, H_out, W_out of y
//   k, stride, pad:            K, S, P
//   frames:                    1: y in [N, W_out, C_out * H_out]
// Dispatch: one thread per output element, flat index group_index(grid) * WG + lid over N x C_out x H_out x
//   W_out (W fastest), so a workgroup's threads mostly share one output channel and its weights.

override WG: u32 = 256;
override WTYPE: u32 = 0u;  // 0 f32, 1 f16, 2 bf16

struct Params {
    n: u32, c_in: u32, h_in: u32, w_in: u32,
    c_out: u32, h_out: u32, w_out: u32, k: u32,
    stride: u32, pad: u32, frames: u32, _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

// #include "lib/packed16.wgsl"

// #include "lib/grid.wgsl"

fn weight(e: u32) -> f32 {
    if (WTYPE == 0u) { return bitcast<f32>(w[e]); }
    return half16(w[e >> 1u], (e & 1u) == 1u);
}

@compute @workgroup_size(WG)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let idx = group_index(grid) * WG + lid;
    let plane = p.h_out * p.w_out;
    if (idx >= p.n * p.c_out * plane) { return; }
    let j = idx % p.w_out;
    let i = (idx / p.w_out) % p.h_out;
    let co = (idx / plane) % p.c_out;
    let n = idx / (plane * p.c_out);
    var acc = 0.0;
    for (var ci = 0u; ci < p.c_in; ci++) {
        let x_base = (n * p.c_in + ci) * p.h_in * p.w_in;
        let w_base = (co * p.c_in + ci) * p.k * p.k;
        for (var a = 0u; a < p.k; a++) {
            // rows above the image: i*S + a < P; below: at or past H
            let r = i32(i * p.stride + a) - i32(p.pad);
            if (r < 0 || r >= i32(p.h_in)) { continue; }
            for (var b = 0u; b < p.k; b++) {
                let c = i32(j * p.stride + b) - i32(p.pad);
                if (c < 0 || c >= i32(p.w_in)) { continue; }
                acc += weight(w_base + a * p.k + b) * x[x_base + u32(r) * p.w_in + u32(c)];
            }
        }
    }
    var o = idx;
    if (p.frames == 1u) { o = (n * p.w_out + j) * p.c_out * p.h_out + co * p.h_out + i; }
    y[o] = acc + bias[co];
}
