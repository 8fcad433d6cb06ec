// copy: dst[i] = src[i] over n 16-byte words. It measures the copy bandwidth that the kernel benchmark
// reports every other kernel against, and copies tensors where a model needs it.
//
// Bindings: 0 params; 1 src: [n] vec4<u32>; 2 dst: [n] vec4<u32>.
// Params:   n = number of 16-byte words.
// Dispatch: ceil(n / (WG * PER_THREAD)) workgroups (groups_for); each thread copies PER_THREAD words,
//           strided by the workgroup size so neighbouring threads touch neighbouring words.

override WG: u32 = 256;
const PER_THREAD: u32 = 4u;

struct Params { n: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let base = (wid.x + wid.y * nwg.x) * WG * PER_THREAD + lid;
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
