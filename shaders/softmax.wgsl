// softmax over the last dim: y[r, i] = exp(x[r, i] - max_r) / sum_j exp(x[r, j] - max_r), f32.
//
// Bindings: 0 params; 1 x: [R, C] f32; 2 y: [R, C] f32.
// Params:   rows = R, cols = C.
// Dispatch: one workgroup of WG threads (a power of two) per row, flat index wid.x + wid.y * nwg.x
//           (groups_for). Pass 1: each thread keeps a running (max, sum of exp(x - max)) over its
//           strided columns (online softmax, one exp per element), then the pairs are combined as a
//           tree in workgroup memory. Pass 2 writes exp(x - max) * (1 / sum).
// x and y are read_write so that y may be x (in place): wgpu rejects a dispatch that binds one buffer
// both read-only and read-write. A thread writes only the columns it alone reads.
// -inf inputs (masks) give 0; a row of only -inf gives NaN, as torch does.

override WG: u32 = 256;

struct Params { rows: u32, cols: u32, _pad0: u32, _pad1: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

var<workgroup> red_m: array<f32, WG>;
var<workgroup> red_s: array<f32, WG>;

const LOWEST: f32 = -3.40282347e38;  // finite start for the running max, so LOWEST - LOWEST is 0, not NaN

// #include "lib/grid.wgsl"

// #include "lib/exp.wgsl"

@compute @workgroup_size(WG)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let row = group_index(grid);
    if (row >= p.rows) { return; }  // uniform per workgroup, so the barriers below stay uniform
    let base = row * p.cols;
    var m = LOWEST;
    var s = 0.0;
    for (var i = lid; i < p.cols; i += WG) {
        let v = x[base + i];
        if (v > m) {
            s = s * exp_f32(m - v) + 1.0;
            m = v;
        } else {
            s += exp_f32(v - m);
        }
    }
    red_m[lid] = m;
    red_s[lid] = s;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h = h / 2u) {
        if (lid < h) {
            let m1 = red_m[lid];
            let m2 = red_m[lid + h];
            let mm = max(m1, m2);
            red_s[lid] = red_s[lid] * exp_f32(m1 - mm) + red_s[lid + h] * exp_f32(m2 - mm);
            red_m[lid] = mm;
        }
        workgroupBarrier();
    }
    let row_max = red_m[0];
    let inv = 1.0 / red_s[0];
    for (var i = lid; i < p.cols; i += WG) {
        y[base + i] = exp_f32(x[base + i] - row_max) * inv;
    }
}
