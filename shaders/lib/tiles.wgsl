// The prefill's tiled matmul with f32 x (lib/tile_gather.wgsl has its contract, bindings and dispatch): entry
// `main` of tiles.wgsl (f32/f16/bf16 weights) and tiles_q8.wgsl (Q8_0 weights widened into the tile), which
// bind the weights from binding 5 on and define
//   fn w_quad(row: u32, q: u32) -> vec4<f32>   weights 4q .. 4q+3 of row `row` of the bound piece, zeros
//                                              past kdim.
//   Binding 1 x: [rows, kdim] f32.
// Tiles are TM = 64 rows by TN = 64 outputs. The K loop takes TK = 32 values a step (one Q8_0 block), x
// and weights as quads of 4 along K: each thread stages two x quads of one row and two weight quads of
// one weight row (and of its up row), the same rows every step, and loads the next step's quads while
// the workgroup computes this one. VEC = true needs kdim % 4 == 0 (x rows and weight quads on whole
// words); false reads element-wise.
//
// Every loop over a vector's components or a small array is written out: naga emits each WGSL loop as a
// while loop, which drivers do not unroll, so such a loop puts the vector or array in memory (a first
// version of this kernel with loops ran 5 times slower on an H200).

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;

// #include "lib/tile_gather.wgsl"

const TK: u32 = 32u;            // K values per step
const QS: u32 = TK / 4u;        // quads per step
const STRIDE: u32 = TM / 4u;    // vec4s per k in a staged tile (TM = TN)
const TILE: u32 = TK * STRIDE;  // vec4s per staged tile
const HALF: u32 = TILE / 2u;    // from quad qi to quad qi + QS / 2 in a staged tile
override VEC: bool = true;

// The staged x tile, then the gate (or down) weight tile, then the up tile: each [k][row / 4] (rows are
// pairs for x, outputs for the weights), so that a thread reads its 4 rows of one k as one vec4.
var<workgroup> tiles: array<vec4<f32>, 3u * TILE>;
const X_TILE: u32 = 0u;
const G_TILE: u32 = TILE;
const U_TILE: u32 = 2u * TILE;

fn x_at(i: u32, ok: bool) -> f32 {
    var v = 0.0;
    if (ok) { v = x[i / 4u][i % 4u]; }
    return v;
}

// Values 4q .. 4q+3 of x row `row`, zeros past kdim.
fn x_quad(row: u32, q: u32) -> vec4<f32> {
    if (VEC) { return x[row * (tp.kdim / 4u) + q]; }
    let i = row * tp.kdim + 4u * q;
    let n = tp.kdim - min(4u * q, tp.kdim);  // values of this quad inside the row
    return vec4<f32>(x_at(i, n > 0u), x_at(i + 1u, n > 1u), x_at(i + 2u, n > 2u), x_at(i + 3u, n > 3u));
}

// A quad's four values into k rows i, i + STRIDE, ... of a staged tile, at component c.
fn put_quad(i: u32, c: u32, v: vec4<f32>) {
    tiles[i][c] = v.x;
    tiles[i + STRIDE][c] = v.y;
    tiles[i + 2u * STRIDE][c] = v.z;
    tiles[i + 3u * STRIDE][c] = v.w;
}

// One step's quads of a thread: x quads qi and qi + 4 of its pair row, and the same quads of its gate
// (or down) weight row and of its up row.
struct Step { x0: vec4<f32>, x1: vec4<f32>, g0: vec4<f32>, g1: vec4<f32>, u0: vec4<f32>, u1: vec4<f32> }

// qi: the first of the thread's two quads of a step (0 .. QS / 2 - 1).
fn load_step(k0: u32, r: Rows, qi: u32, quads: u32) -> Step {
    // Zeros written out rather than left to `var s: Step;`: naga does not re-zero such a var on every
    // call, and a padding row would stage stale values (never stored, but zeros keep the tile finite).
    let z = vec4<f32>(0.0);
    var s = Step(z, z, z, z, z, z);
    let qa = k0 + qi;
    let qb = qa + QS / 2u;
    if (r.has_x && qa < quads) { s.x0 = x_quad(r.x, qa); }
    if (r.has_x && qb < quads) { s.x1 = x_quad(r.x, qb); }
    if (r.has_w && qa < quads) {
        s.g0 = w_quad(r.w, qa);
        if (GATE_UP) { s.u0 = w_quad(r.w + tp.n, qa); }
    }
    if (r.has_w && qb < quads) {
        s.g1 = w_quad(r.w, qb);
        if (GATE_UP) { s.u1 = w_quad(r.w + tp.n, qb); }
    }
    return s;
}

// Step k of the staged tiles into a thread's block (x column lid.y, weight column lid.x).
fn mac(acc: Acc, k: u32, ly: u32, lx: u32) -> Acc {
    let a = tiles[X_TILE + k * STRIDE + ly];
    let b = tiles[G_TILE + k * STRIDE + lx];
    var r = acc;
    r.g0 = fma(vec4<f32>(a.x), b, r.g0);
    r.g1 = fma(vec4<f32>(a.y), b, r.g1);
    r.g2 = fma(vec4<f32>(a.z), b, r.g2);
    r.g3 = fma(vec4<f32>(a.w), b, r.g3);
    if (GATE_UP) {
        let bu = tiles[U_TILE + k * STRIDE + lx];
        r.u0 = fma(vec4<f32>(a.x), bu, r.u0);
        r.u1 = fma(vec4<f32>(a.y), bu, r.u1);
        r.u2 = fma(vec4<f32>(a.z), bu, r.u2);
        r.u3 = fma(vec4<f32>(a.w), bu, r.u3);
    }
    return r;
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let t = tile_at(wid);
    if (!t.ok) { return; }  // the same for the whole workgroup
    // This workgroup's quads of K: all of them, or split-K's [z split, (z + 1) split) (split a multiple of QS).
    let k_first = wid.z * tp.split;
    let quads = min((tp.kdim + 3u) / 4u, k_first + tp.split);
    // The rows this thread stages: pair row r of the tile and weight row r, quads qi and qi + 4 of a step.
    // Consecutive threads take consecutive rows, so the workgroup-memory stores fall in distinct banks.
    let r = li % TM;
    let rows = staged_rows(t, r);
    let qi = li / TM;
    let at = 4u * qi * STRIDE + r / 4u;
    let c = r % 4u;
    var acc = zero_acc();
    var st = load_step(k_first, rows, qi, quads);
    for (var k0 = k_first; k0 < quads; k0 += QS) {
        put_quad(X_TILE + at, c, st.x0);
        put_quad(X_TILE + at + HALF, c, st.x1);
        put_quad(G_TILE + at, c, st.g0);
        put_quad(G_TILE + at + HALF, c, st.g1);
        if (GATE_UP) {
            put_quad(U_TILE + at, c, st.u0);
            put_quad(U_TILE + at + HALF, c, st.u1);
        }
        workgroupBarrier();
        // The next step's loads go out now and land while this step computes.
        if (k0 + QS < quads) { st = load_step(k0 + QS, rows, qi, quads); }
        // Four steps of k a trip: the loop's counter, compare and branch are a fifth of its instructions
        // at one step a trip (naga's while loops are not unrolled by the driver).
        for (var k = 0u; k < TK; k += 4u) {
            acc = mac(acc, k, lid.y, lid.x);
            acc = mac(acc, k + 1u, lid.y, lid.x);
            acc = mac(acc, k + 2u, lid.y, lid.x);
            acc = mac(acc, k + 3u, lid.y, lid.x);
        }
        workgroupBarrier();
    }
    store_block(t, lid, acc);
}
