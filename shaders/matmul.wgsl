// matmul: Y[m, row_base + n] = sum_k X[m, k] * W[n, k]  (prefill; W in the [out, in] layout of nn.Linear).
//
// Bindings: 0 params; 1 x: [M, K] f32; 2 w: [N, K] weight rows of this piece, packed per WTYPE
//           (f32 one per u32; f16 and bf16 two per u32, element 2j in the low half); 3 y: [M, ldy] f32.
// Params:   m = M, n = rows in this piece, k = K, row_base = first output column of this piece,
//           ldy = row stride of Y (the full N).
// Dispatch: (ceil(n / TILE), ceil(m / TILE)) workgroups of (TILE/4) x (TILE/4) threads; each thread
//           computes a 4 x 4 block of Y. Any M, N, K: loads and stores are bounds-checked.

override WTYPE: u32 = 2u;  // 0 f32, 1 f16, 2 bf16
const TILE: u32 = 64u;
const TK: u32 = 16u;
const THREADS: u32 = 256u;  // (TILE / 4)^2

struct Params { m: u32, n: u32, k: u32, row_base: u32, ldy: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

var<workgroup> xs: array<array<f32, TILE>, TK>;  // [k][m]
var<workgroup> ws: array<array<f32, TILE>, TK>;  // [k][n]

// #include "lib/packed16.wgsl"

fn weight(e: u32) -> f32 {
    if (WTYPE == 0u) { return bitcast<f32>(w[e]); }
    return half16(w[e >> 1u], (e & 1u) == 1u);
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let n0 = wid.x * TILE;
    let m0 = wid.y * TILE;
    var acc: array<array<f32, 4>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        // Each thread stages TILE * TK / THREADS = 4 elements of X and of W, as zeros past the edges.
        for (var i = 0u; i < 4u; i++) {
            let e = li + i * THREADS;
            let kk = e % TK;
            let r = e / TK;
            let k = k0 + kk;
            var xv = 0.0;
            if (m0 + r < p.m && k < p.k) { xv = x[(m0 + r) * p.k + k]; }
            xs[kk][r] = xv;
            var wv = 0.0;
            if (n0 + r < p.n && k < p.k) { wv = weight((n0 + r) * p.k + k); }
            ws[kk][r] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = xs[kk][lid.y * 4u + i];
                b[i] = ws[kk][lid.x * 4u + i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] = fma(a[i], b[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + lid.y * 4u + i;
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + lid.x * 4u + j;
            if (m < p.m && n < p.n) { y[m * p.ldy + p.row_base + n] = acc[i][j]; }
        }
    }
}
