// tiles_dot4: the prefill's tiled matmul with a row gather (dense linears and the MoE experts;
// lib/tile_gather.wgsl has the contract, the shared bindings and the dispatch) for Q8_0 weights and int8
// activations: each Q8_0 block's 32 products through dot4I8Packed (four int8 MACs an instruction), summed
// exactly in i32, then acc += f32(sum) * (x scale * weight scale), as decode's matvec_dot4 (q8_0.wgsl) and
// llama.cpp's mmq do. x is quantize_act's output (ops/q8_0.quantize_activations: llama.cpp's q8_0 rule per
// block of 32). kdim % 32 == 0.
//   Bindings 1 xq: [rows, kdim/4] u32 (int8 x4, element 4j in the low byte); 5 wq: [E_piece, rows per
//   matrix, kdim/4] u32 (int8 x4); 6 ws: [E_piece, rows, kdim/32] f16 scales packed two per u32;
//   7 xs: [rows, kdim/32] f32 (x's block scales).
//
// K is walked one block a step. A step stages its 64 x rows' 8 words and scale and its 64 weight rows'
// 8 words and scale (and the up rows' with GATE_UP), each operand as [word q][row / 4] vec4<u32> (row % 4
// the component), so a thread reads its 4 rows (or 4 outputs) of one word as one vec4 with no bank
// conflicts, and the stores of consecutive threads (consecutive rows) fall in distinct banks. The steps
// alternate between two halves of workgroup memory, so one barrier a step suffices: a half is written again
// two steps later, after every thread has passed the barrier that follows its last reads. Each thread
// issues the next step's loads before it computes this one. The loops over the 8 words of a block and over
// a thread's 4 x 4 block are written out (naga emits WGSL loops as while loops, which the NVIDIA driver does
// not unroll; a loop over a local array puts it in slow local memory).

@group(0) @binding(1) var<storage, read> xq: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> wq: array<vec4<u32>>;
@group(0) @binding(6) var<storage, read> ws: array<u32>;
@group(0) @binding(7) var<storage, read> xs: array<f32>;

// #include "lib/tile_gather.wgsl"

// #include "lib/q8_block.wgsl"

const QK: u32 = 32u;                 // values per Q8_0 block, the K of a step
const QW: u32 = QK / 4u;             // u32 words of int8 per block row
const R4: u32 = TM / 4u;             // vec4s per word of a staged operand (TM = TN)
const OP_WORDS: u32 = QW * R4;       // vec4s of one staged operand (x, gate or up) of a step
const OP_SCALES: u32 = R4;           // vec4s of one operand's scales
// Operands of a half: x, gate (or down), up.
const X_OP: u32 = 0u;
const G_OP: u32 = 1u;
const U_OP: u32 = 2u;

var<workgroup> sq: array<vec4<u32>, 2u * 3u * OP_WORDS>;
var<workgroup> sd: array<vec4<f32>, 2u * 3u * OP_SCALES>;

// What a thread loads for a step: part 0 and 1 of the workgroup (threads 0-63, 64-127) words 0-3 and 4-7
// of x row r, part 0 its scale; part 2 and 3 words 0-3 and 4-7 of weight row r (and of its up row with
// GATE_UP), part 2 the weight row's scale, part 3 the up row's. One warp or wave holds one part, so the
// branches do not diverge within it.
struct Staged { a: vec4<u32>, b: vec4<u32>, s: f32 }

// Where a thread's loads come from, the same rows every step: step blk reads vec4 a + 2 blk (x or weight
// row), b + 2 blk (the up row) and scale s + blk; ok false for a padding row or an output past N.
struct Source { a: u32, b: u32, s: u32, ok: bool }

fn source_of(r: Rows, part: u32) -> Source {
    let h = part & 1u;
    let words = tp.kdim / 16u;  // vec4s per row
    let blocks = tp.kdim / QK;  // scales per row
    if (part < 2u) { return Source(r.x * words + h, 0u, r.x * blocks, r.has_x); }
    // part 2: the weight row's scale; part 3: the up row's
    return Source(r.w * words + h, (r.w + tp.n) * words + h, (r.w + h * tp.n) * blocks, r.has_w);
}

fn load_step(blk: u32, src: Source, part: u32) -> Staged {
    // Zeros written out, not left to `var v: Staged;` (naga does not re-zero such a var on every call):
    // padding rows and outputs past N stage zeros.
    var v = Staged(vec4<u32>(0u), vec4<u32>(0u), 0.0);
    if (!src.ok) { return v; }
    let h = part & 1u;
    if (part < 2u) {
        v.a = xq[src.a + 2u * blk];
        if (h == 0u) { v.s = xs[src.s + blk]; }
    } else {
        v.a = wq[src.a + 2u * blk];
        if (GATE_UP) { v.b = wq[src.b + 2u * blk]; }
        if (h == 0u || GATE_UP) {
            let si = src.s + blk;
            v.s = block_scale(ws[si >> 1u], si);
        }
    }
    return v;
}

// Four words of one row (words 4h .. 4h + 3) into an operand's [word][row / 4] layout, component c.
fn put_words(i: u32, c: u32, v: vec4<u32>) {
    sq[i][c] = v.x;
    sq[i + R4][c] = v.y;
    sq[i + 2u * R4][c] = v.z;
    sq[i + 3u * R4][c] = v.w;
}

// A thread's loads of a step into half `half` of workgroup memory (row r of the tile, part `part`).
fn put_step(half: u32, r: u32, part: u32, v: Staged) {
    let h = part & 1u;
    let at = half * 3u * OP_WORDS + 4u * h * R4 + r / 4u;
    let sat = half * 3u * OP_SCALES + r / 4u;
    let c = r % 4u;
    if (part < 2u) {
        put_words(at + X_OP * OP_WORDS, c, v.a);
        if (h == 0u) { sd[sat + X_OP * OP_SCALES][c] = v.s; }
    } else {
        put_words(at + G_OP * OP_WORDS, c, v.a);
        if (h == 0u) { sd[sat + G_OP * OP_SCALES][c] = v.s; }
        if (GATE_UP) {
            put_words(at + U_OP * OP_WORDS, c, v.b);
            if (h == 1u) { sd[sat + U_OP * OP_SCALES][c] = v.s; }
        }
    }
}

// The i32 block sums of a thread's 4 x 4 block (twice with GATE_UP), as Acc's rows.
struct ISum { g0: vec4<i32>, g1: vec4<i32>, g2: vec4<i32>, g3: vec4<i32>,
              u0: vec4<i32>, u1: vec4<i32>, u2: vec4<i32>, u3: vec4<i32> }

// One x word (4 int8 of each of 4 rows) against one weight word (4 int8 of each of 4 outputs).
fn dot_rows(a: u32, b: vec4<u32>) -> vec4<i32> {
    return vec4<i32>(dot4I8Packed(a, b.x), dot4I8Packed(a, b.y), dot4I8Packed(a, b.z), dot4I8Packed(a, b.w));
}

// Word q of the staged step at `at` (its half's first vec4) into the sums: x rows 4 ly .. + 3, outputs
// 4 lx .. + 3.
fn dot_word(s: ISum, at: u32, q: u32, ly: u32, lx: u32) -> ISum {
    let a = sq[at + X_OP * OP_WORDS + q * R4 + ly];
    let b = sq[at + G_OP * OP_WORDS + q * R4 + lx];
    var r = s;
    r.g0 += dot_rows(a.x, b);
    r.g1 += dot_rows(a.y, b);
    r.g2 += dot_rows(a.z, b);
    r.g3 += dot_rows(a.w, b);
    if (GATE_UP) {
        let u = sq[at + U_OP * OP_WORDS + q * R4 + lx];
        r.u0 += dot_rows(a.x, u);
        r.u1 += dot_rows(a.y, u);
        r.u2 += dot_rows(a.z, u);
        r.u3 += dot_rows(a.w, u);
    }
    return r;
}

// The step staged in half `half` into a thread's block: exact i32 sums over the block's 32 values, then
// f32(sum) * (x scale * weight scale) added to the f32 accumulators.
fn dot_step(acc: Acc, half: u32, ly: u32, lx: u32) -> Acc {
    let at = half * 3u * OP_WORDS;
    let zi = vec4<i32>(0);
    var s = ISum(zi, zi, zi, zi, zi, zi, zi, zi);
    s = dot_word(s, at, 0u, ly, lx);
    s = dot_word(s, at, 1u, ly, lx);
    s = dot_word(s, at, 2u, ly, lx);
    s = dot_word(s, at, 3u, ly, lx);
    s = dot_word(s, at, 4u, ly, lx);
    s = dot_word(s, at, 5u, ly, lx);
    s = dot_word(s, at, 6u, ly, lx);
    s = dot_word(s, at, 7u, ly, lx);
    let sat = half * 3u * OP_SCALES;
    let dx = sd[sat + X_OP * OP_SCALES + ly];  // scales of x rows 4 ly .. + 3
    let dg = sd[sat + G_OP * OP_SCALES + lx];  // scales of weight rows 4 lx .. + 3
    var r = acc;
    r.g0 = fma(vec4<f32>(s.g0), dx.x * dg, r.g0);
    r.g1 = fma(vec4<f32>(s.g1), dx.y * dg, r.g1);
    r.g2 = fma(vec4<f32>(s.g2), dx.z * dg, r.g2);
    r.g3 = fma(vec4<f32>(s.g3), dx.w * dg, r.g3);
    if (GATE_UP) {
        let du = sd[sat + U_OP * OP_SCALES + lx];
        r.u0 = fma(vec4<f32>(s.u0), dx.x * du, r.u0);
        r.u1 = fma(vec4<f32>(s.u1), dx.y * du, r.u1);
        r.u2 = fma(vec4<f32>(s.u2), dx.z * du, r.u2);
        r.u3 = fma(vec4<f32>(s.u3), dx.w * du, r.u3);
    }
    return r;
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let t = tile_at(wid);
    if (!t.ok) { return; }  // the same for the whole workgroup
    let r = li % TM;
    let part = li / TM;
    let src = source_of(staged_rows(t, r), part);
    let blocks = tp.kdim / QK;
    var acc = zero_acc();
    var st = load_step(0u, src, part);
    for (var blk = 0u; blk < blocks; blk++) {
        let half = blk & 1u;
        put_step(half, r, part, st);
        workgroupBarrier();
        // The next step's loads go out now and land while this step computes.
        if (blk + 1u < blocks) { st = load_step(blk + 1u, src, part); }
        acc = dot_step(acc, half, lid.y, lid.x);
    }
    store_block(t, lid, acc);
}
