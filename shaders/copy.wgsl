// copy: dst[i] = src[i] over n 16-byte words. It measures the copy bandwidth that the kernel benchmark
// reports every other kernel against, and copies tensors where a model needs it.
//
// Entry `main`:
//   Bindings: 0 params; 1 src: [n] vec4<u32>; 2 dst: [n] vec4<u32>.
//   Params:   n = number of 16-byte words.
//   Dispatch: ceil(n / (WG * PER_THREAD)) workgroups (groups_for); each thread copies PER_THREAD words,
//             strided by the workgroup size so neighbouring threads touch neighbouring words.
//
// Entry `rows_at_step`: dst rows start + t <- src row t, start = step[0] read on the GPU (a component's
// export: the rows of this step's tokens land at their positions; rows >= dst_rows are dropped).
//   Bindings: 0 params; 1 src: [T, row] u32; 2 dst: [dst_rows, row] u32 (read_write); 3 step: [4] u32.
//   Params:   n = T * row words, row = words per row, dst_rows.
//   Dispatch: one thread per word of src, workgroups of WG, flat index (groups_for).

override WG: u32 = 256;
const PER_THREAD: u32 = 4u;

struct Params { n: u32, row: u32, dst_rows: u32, _p0: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;

// #include "lib/grid.wgsl"

@compute @workgroup_size(WG)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let base = group_index(grid) * WG * PER_THREAD + lid;
    if (base + (PER_THREAD - 1u) * WG < p.n) {
        // All loads before any store, so PER_THREAD reads are in flight at once.
        var v: array<vec4<u32>, PER_THREAD>;
        for (var i = 0u; i < PER_THREAD; i++) { v[i] = src[base + i * WG]; }
        for (var i = 0u; i < PER_THREAD; i++) { dst[base + i * WG] = v[i]; }
        return;
    }
    for (var i = 0u; i < PER_THREAD; i++) {
        let j = base + i * WG;
        if (j < p.n) { dst[j] = src[j]; }
    }
}

@group(0) @binding(0) var<uniform> pr: Params;
@group(0) @binding(1) var<storage, read> src_w: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst_w: array<u32>;
@group(0) @binding(3) var<storage, read> step: array<u32>;

@compute @workgroup_size(WG)
fn rows_at_step(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let g = group_index(grid) * WG + lid;
    if (g >= pr.n) { return; }
    let row = step[0] + g / pr.row;
    if (row >= pr.dst_rows) { return; }
    dst_w[row * pr.row + g % pr.row] = src_w[g];
}
