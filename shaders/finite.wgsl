// finite: flags[index] = 1 where a weight tensor holds a NaN or an inf (an exponent of all ones), read as
// u32 words whatever its dtype; the loaders run it on every weight they upload, so a corrupt checkpoint is
// named at load by the GPU in one pass over its bytes (a host check of a 30B model costs ~25 s of CPU).
//
// Bindings: 0 params; 1 x: [words] u32, the tensor's bytes; 2 flags: [N] u32 (read_write).
// Params:   words = u32 words to check, kind (0 f32: one value a word; 1 f16, 2 bf16: two a word, element 2j
//           in the low half), halves = 16-bit values in all (the last word's high half is padding when odd),
//           index = the flag to set, unset otherwise (a tensor marks only its own flag).
// Dispatch: ceil(words / WG) workgroups of WG threads, one word a thread, flat index (groups_for).

override WG: u32 = 256u;

struct Params { words: u32, kind: u32, halves: u32, index: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> flags: array<u32>;

// #include "lib/grid.wgsl"

fn bad16(h: u32, mask: u32) -> bool {
    return (h & mask) == mask;
}

@compute @workgroup_size(WG)
fn mark(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = group_index(grid) * WG + lid;
    if (i >= p.words) { return; }
    let v = x[i];
    var bad = false;
    if (p.kind == 0u) {
        bad = (v & 0x7f800000u) == 0x7f800000u;
    } else {
        let mask = select(0x7f80u, 0x7c00u, p.kind == 1u);  // the exponent bits: bf16 8, f16 5
        bad = bad16(v & 0xffffu, mask) || (2u * i + 1u < p.halves && bad16(v >> 16u, mask));
    }
    if (bad) { flags[p.index] = 1u; }
}
