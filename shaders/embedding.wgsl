// embedding: out[t, :] = table[ids[t], :] widened to f32, for the rows of one binding piece of the table.
//
// Entry `main`: a 16-bit or f32 table.
//   Bindings: 0 params; 1 ids: [T] i32; 2 table piece: [rows, D] packed per WTYPE (f32: one per u32;
//             f16 and bf16: two per u32, element 2j in the low half), starting at table row row0;
//             3 out: [T, D] f32.
// Entry `main_q8`: a Q8_0 table (formats/q8_0.py Q8Weight), D a multiple of 32; out = f32(d) * f32(q),
//   one rounding, the same value as gguf's dequantize.
//   Bindings: 0 params; 1 ids: [T] i32; 2 quants piece: [rows, D/4] u32, int8 four per word, element
//             4j in the low byte; 3 scales piece: [rows, D/32] f16, two per u32, element 2j in the low
//             half (a row's scales may start mid-word); 4 out: [T, D/4] vec4<f32>. Both pieces start at
//             table row row0.
// Entry `mean`: out[t, :] = (sum over g of table[ids[t * G + g], :]) / G, a bag of G ids per row (code2wav's
//   code embedding: one id per codebook, their mean). Bindings as `main`, ids [T * G]. A piece adds the
//   rows of its ids to what the pieces before it wrote (row0 == 0 starts from zero), so a table past the
//   binding limit is summed piece by piece; an id outside [0, V) adds nothing.
// Params:   t = T, d = D, row0 = first table row of this piece, rows = rows in this piece,
//           vocab = V (rows of the whole table), group = G (`mean` only).
// Dispatch: once per piece; one workgroup of WG threads per token, flat index wid.x + wid.y * nwg.x
//           (groups_for), threads striding over D (main) or over D/4 words (main_q8). A token whose id
//           lies in [row0, row0 + rows) is copied by this piece's dispatch and left alone by the others.
//           An id outside [0, V) gets a row of zeros from the dispatch of the piece with row0 = 0, so no
//           id reads or writes out of bounds (callers validate ids on the host; this is the guard, not
//           the check).

override WG: u32 = 256;
override WTYPE: u32 = 2u;  // 0 f32, 1 f16, 2 bf16
const QK: u32 = 32u;        // values per Q8_0 block
const BLOCK_WORDS: u32 = QK / 4u;  // u32 words of quants per block

struct Params { t: u32, d: u32, row0: u32, rows: u32, vocab: u32, group: u32, _pad1: u32, _pad2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<i32>;
@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@group(0) @binding(2) var<storage, read> q8_quants: array<u32>;
@group(0) @binding(3) var<storage, read> q8_scales: array<u32>;
@group(0) @binding(4) var<storage, read_write> q8_out: array<vec4<f32>>;

// #include "lib/grid.wgsl"
// #include "lib/q8_block.wgsl"

// Element e (counted from the start of this piece) as f32.
// #include "lib/packed16.wgsl"

fn element(e: u32) -> f32 {
    if (WTYPE == 0u) { return bitcast<f32>(table[e]); }
    return half16(table[e / 2u], (e & 1u) == 1u);
}

@compute @workgroup_size(WG)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let tok = group_index(grid);
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

@compute @workgroup_size(WG)
fn main_q8(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let tok = group_index(grid);
    if (tok >= p.t) { return; }
    let id = ids[tok];
    let words = p.d / 4u;
    let dst = tok * words;
    if (id >= 0 && u32(id) >= p.row0 && u32(id) - p.row0 < p.rows) {
        let row = u32(id) - p.row0;
        let src = row * words;
        let first_scale = row * (p.d / QK);
        for (var i = lid; i < words; i += WG) {
            let si = first_scale + i / BLOCK_WORDS;
            let d = block_scale(q8_scales[si >> 1u], si);
            q8_out[dst + i] = d * vec4<f32>(unpack4xI8(q8_quants[src + i]));
        }
    } else if (p.row0 == 0u && (id < 0 || u32(id) >= p.vocab)) {
        for (var i = lid; i < words; i += WG) { q8_out[dst + i] = vec4<f32>(0.0); }
    }
}

@compute @workgroup_size(WG)
fn mean(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let tok = group_index(grid);
    if (tok >= p.t) { return; }
    let dst = tok * p.d;
    for (var i = lid; i < p.d; i += WG) {
        var acc = 0.0;
        for (var g = 0u; g < p.group; g++) {
            let id = ids[tok * p.group + g];
            if (id >= 0 && u32(id) >= p.row0 && u32(id) - p.row0 < p.rows) {
                acc += element((u32(id) - p.row0) * p.d + i);
            }
        }
        let before = select(out[dst + i], 0.0, p.row0 == 0u);
        out[dst + i] = before + acc / f32(p.group);
    }
}
