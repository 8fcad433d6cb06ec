// embedding: out[t, :] = table[ids[t], :] widened to f32, for the rows of one binding piece of the table.
//
// Bindings: 0 params; 1 ids: [T] i32; 2 table piece: [rows, D] packed per WTYPE (f32: one per u32;
//           f16 and bf16: two per u32, element 2j in the low half), starting at table row row0;
//           3 out: [T, D] f32.
// Params:   t = T, d = D, row0 = first table row of this piece, rows = rows in this piece,
//           vocab = V (rows of the whole table).
// Dispatch: once per piece; one workgroup of WG threads per token, flat index wid.x + wid.y * nwg.x
//           (groups_for), threads striding over D. A token whose id lies in [row0, row0 + rows) is
//           copied by this piece's dispatch and left alone by the others. An id outside [0, V) gets a
//           row of zeros from the dispatch of the piece with row0 = 0, so no id reads or writes out of
//           bounds (callers validate ids on the host; this is the guard, not the check).

override WG: u32 = 256;
override WTYPE: u32 = 2u;  // 0 f32, 1 f16, 2 bf16

struct Params { t: u32, d: u32, row0: u32, rows: u32, vocab: u32, _pad0: u32, _pad1: u32, _pad2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<i32>;
@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// Element e (counted from the start of this piece) as f32.
// #include "lib/packed16.wgsl"

fn element(e: u32) -> f32 {
    if (WTYPE == 0u) { return bitcast<f32>(table[e]); }
    return half16(table[e / 2u], (e & 1u) == 1u);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let tok = wid.x + wid.y * nwg.x;
    if (tok >= p.t) { return; }
    let id = ids[tok];
    let dst = tok * p.d;
    if (id >= 0 && u32(id) >= p.row0 && u32(id) - p.row0 < p.rows) {
        let src = (u32(id) - p.row0) * p.d;
        for (var i = lid; i < p.d; i += WG) { out[dst + i] = element(src + i); }
    } else if (p.row0 == 0u && (id < 0 || u32(id) >= p.vocab)) {
        for (var i = lid; i < p.d; i += WG) { out[dst + i] = 0.0; }
    }
}
