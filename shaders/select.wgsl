// select: argmax and top-k over the last dim of f32 rows, results left on the GPU.
//
// Order: values are compared through an order-preserving u32 key (NaN above +inf as torch ranks it,
// -0 equal to +0); equal keys are ordered by lower column index first. Key 0 never comes from data
// (it would be a negative NaN, which ranks as NaN), so (key 0, index 0xffffffff) pads below everything.
//
// Entry `argmax`:
//   Bindings: 0 params; 1 x: [R, C] f32; 2 out: [R] i32; 3 top: [R] f32, the row's largest value (NaN if the
//             row holds one, as NaN ranks first): a greedy decode reads it with the id, to see non-finite logits.
//   Params:   rows = R, len = C.
//   Dispatch: one workgroup of WG threads per row (flat index wid.x + wid.y * nwg.x, groups_for);
//             strided scan, then a tree reduction of (key, index) pairs in workgroup memory.
// Entries `argmax_chunks` + `argmax_cands`: argmax of a few long rows (a vocabulary's logits) over many
//   workgroups, in two dispatches, the same (key, index) order as `argmax` (and as top-k with k = 1, which
//   sorts whole chunks for the one value it keeps).
//   `argmax_chunks`: 0 params; 1 x: [R, C] f32; 2 cand: [R, nchunks] vec2<u32> (key, column), the best of
//                    each chunk of 4 * WG columns (every thread loads its four before comparing them).
//                    Params rows = R, len = C, nchunks. Dispatch: one workgroup per (row, chunk), flat index
//                    g, row = g / nchunks.
//   `argmax_cands`:  0 params; 1 cand_in: [R, nchunks] vec2<u32>; 2 out: [R] i32; 3 top: [R] f32, as
//                    `argmax`. Params rows = R, len = nchunks. Dispatch: one workgroup per row.
//
// Top-k runs in rounds. A round splits each row's `len` entries into `nchunks` chunks of CHUNK (a power
// of two), sorts each chunk in workgroup memory (bitonic, descending) and keeps its first k. The first
// round reads x, later rounds read the (key, index) candidates of the round before ([R, nchunks, k]
// per row, so len = nchunks_before * k); the last round (nchunks = 1) writes values and indices.
//   `chunks_x`:      0 params; 1 x: [R, C] f32;               2 cand: [R, nchunks, k] vec2<u32>
//   `chunks_cand`:   0 params; 1 cand_in: [R, len] vec2<u32>;  2 cand: [R, nchunks, k] vec2<u32>
//   `final_x`:       0 params; 1 x: [R, C] f32;               2 values: [R, k] f32; 3 indices: [R, k] i32
//   `final_cand`:    0 params; 1 cand_in: [R, len] vec2<u32>;  2 values: [R, k] f32; 3 indices: [R, k] i32
//   Params:   rows = R, len = entries per row read this round, k, nchunks = chunks per row this round.
//   Dispatch: one workgroup of WG threads per (row, chunk), flat index g = wid.x + wid.y * nwg.x,
//             row = g / nchunks, chunk = g % nchunks. Needs k <= CHUNK and WG <= CHUNK / 2.

override WG: u32 = 256;
override CHUNK: u32 = 2048;

struct Params { rows: u32, len: u32, k: u32, nchunks: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> cand_in: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read_write> argmax_out: array<i32>;
@group(0) @binding(2) var<storage, read_write> cand: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read_write> values: array<f32>;
@group(0) @binding(3) var<storage, read_write> indices: array<i32>;
@group(0) @binding(3) var<storage, read_write> argmax_top: array<f32>;

const PAD_KEY: u32 = 0u;
const PAD_INDEX: u32 = 0xffffffffu;

fn order_key(v: f32) -> u32 {
    let b = bitcast<u32>(v);
    if ((b & 0x7fffffffu) > 0x7f800000u) { return 0xffffffffu; }  // NaN, by bits: compilers may drop v != v
    if (b == 0x80000000u) { return 0x80000000u; }                  // -0 as +0
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn key_value(k: u32) -> f32 {
    return bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u));
}

// (k1, i1) comes before (k2, i2): larger key, then lower index.
fn before(k1: u32, i1: u32, k2: u32, i2: u32) -> bool {
    return k1 > k2 || (k1 == k2 && i1 < i2);
}

// ---- argmax ----------------------------------------------------------------------------------------

var<workgroup> red_k: array<u32, WG>;
var<workgroup> red_i: array<u32, WG>;

// #include "lib/grid.wgsl"

// The workgroup's best (key, index) pair of those its threads hold; every thread gets it. Call in
// uniform control flow.
fn best_pair(lid: u32, k: u32, i: u32) -> vec2<u32> {
    red_k[lid] = k;
    red_i[lid] = i;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h = h / 2u) {
        if (lid < h && before(red_k[lid + h], red_i[lid + h], red_k[lid], red_i[lid])) {
            red_k[lid] = red_k[lid + h];
            red_i[lid] = red_i[lid + h];
        }
        workgroupBarrier();
    }
    return vec2<u32>(red_k[0], red_i[0]);
}

fn store_argmax(row: u32, best: vec2<u32>) {
    argmax_out[row] = i32(best.y);
    argmax_top[row] = key_value(best.x);
}

@compute @workgroup_size(WG)
fn argmax(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let row = group_index(grid);
    if (row >= p.rows) { return; }  // uniform per workgroup, so the barriers below stay uniform
    let base = row * p.len;
    var bk = PAD_KEY;
    var bi = PAD_INDEX;
    for (var i = lid; i < p.len; i += WG) {
        let k = order_key(x[base + i]);
        if (k > bk) {  // columns rise along the scan, so a tie keeps the earlier one; any data key > PAD_KEY
            bk = k;
            bi = i;
        }
    }
    let best = best_pair(lid, bk, bi);
    if (lid == 0u) { store_argmax(row, best); }
}

fn key_at(base: u32, col: u32) -> u32 {
    return select(PAD_KEY, order_key(x[base + col]), col < p.len);
}

@compute @workgroup_size(WG)
fn argmax_chunks(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let g = group_index(grid);
    let row = g / p.nchunks;
    if (row >= p.rows) { return; }  // uniform per workgroup
    let base = row * p.len;
    let c0 = (g % p.nchunks) * 4u * WG + lid;
    // Four loads in flight, then the comparisons in column order (a tie keeps the earlier column).
    let k = vec4<u32>(key_at(base, c0), key_at(base, c0 + WG), key_at(base, c0 + 2u * WG), key_at(base, c0 + 3u * WG));
    var bk = PAD_KEY;
    var bi = PAD_INDEX;
    for (var j = 0u; j < 4u; j++) {
        if (k[j] > bk) {
            bk = k[j];
            bi = c0 + j * WG;
        }
    }
    let best = best_pair(lid, bk, bi);
    if (lid == 0u) { cand[g] = best; }
}

@compute @workgroup_size(WG)
fn argmax_cands(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let row = group_index(grid);
    if (row >= p.rows) { return; }  // uniform per workgroup
    var b = vec2<u32>(PAD_KEY, PAD_INDEX);
    for (var j = lid; j < p.len; j += WG) {
        let e = cand_in[row * p.len + j];
        if (before(e.x, e.y, b.x, b.y)) { b = e; }
    }
    let best = best_pair(lid, b.x, b.y);
    if (lid == 0u) { store_argmax(row, best); }
}

// ---- top-k -----------------------------------------------------------------------------------------

var<workgroup> sk: array<u32, CHUNK>;
var<workgroup> si: array<u32, CHUNK>;

struct Chunk { row: u32, first: u32, count: u32, valid: bool }

fn chunk_of(grid: Grid) -> Chunk {
    let g = group_index(grid);
    let row = g / p.nchunks;
    let first = (g % p.nchunks) * CHUNK;
    return Chunk(row, first, min(CHUNK, p.len - min(first, p.len)), row < p.rows);
}

// Sorts sk/si descending in `before` order (bitonic network: log2(CHUNK) merges of growing size).
fn sort_chunk(lid: u32) {
    workgroupBarrier();
    for (var size = 2u; size <= CHUNK; size = size * 2u) {
        for (var stride = size / 2u; stride > 0u; stride = stride / 2u) {
            for (var t = lid; t < CHUNK / 2u; t += WG) {
                let i = 2u * t - (t & (stride - 1u));  // lower element of pair t
                let j = i + stride;
                let descending = (i & size) == 0u;
                if (before(sk[j], si[j], sk[i], si[i]) == descending) {
                    let k = sk[i];
                    let n = si[i];
                    sk[i] = sk[j];
                    si[i] = si[j];
                    sk[j] = k;
                    si[j] = n;
                }
            }
            workgroupBarrier();
        }
    }
}

fn load_x(c: Chunk, lid: u32) {
    for (var j = lid; j < CHUNK; j += WG) {
        let col = c.first + j;
        if (j < c.count) {
            sk[j] = order_key(x[c.row * p.len + col]);
            si[j] = col;
        } else {
            sk[j] = PAD_KEY;
            si[j] = PAD_INDEX;
        }
    }
}

fn load_cand(c: Chunk, lid: u32) {
    for (var j = lid; j < CHUNK; j += WG) {
        if (j < c.count) {
            let e = cand_in[c.row * p.len + c.first + j];
            sk[j] = e.x;
            si[j] = e.y;
        } else {
            sk[j] = PAD_KEY;
            si[j] = PAD_INDEX;
        }
    }
}

fn store_cand(g: u32, lid: u32) {
    for (var j = lid; j < p.k; j += WG) { cand[g * p.k + j] = vec2<u32>(sk[j], si[j]); }
}

fn store_final(c: Chunk, lid: u32) {
    for (var j = lid; j < p.k; j += WG) {
        values[c.row * p.k + j] = key_value(sk[j]);
        indices[c.row * p.k + j] = i32(si[j]);
    }
}

@compute @workgroup_size(WG)
fn chunks_x(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let c = chunk_of(grid);
    if (!c.valid) { return; }
    load_x(c, lid);
    sort_chunk(lid);
    store_cand(group_index(grid), lid);
}

@compute @workgroup_size(WG)
fn chunks_cand(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let c = chunk_of(grid);
    if (!c.valid) { return; }
    load_cand(c, lid);
    sort_chunk(lid);
    store_cand(group_index(grid), lid);
}

@compute @workgroup_size(WG)
fn final_x(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let c = chunk_of(grid);
    if (!c.valid) { return; }
    load_x(c, lid);
    sort_chunk(lid);
    store_final(c, lid);
}

@compute @workgroup_size(WG)
fn final_cand(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let c = chunk_of(grid);
    if (!c.valid) { return; }
    load_cand(c, lid);
    sort_chunk(lid);
    store_final(c, lid);
}
