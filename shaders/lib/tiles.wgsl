// Tiled matmul with a row gather, the prefill's one matmul: out[p, col_base + f] = W[e, f] . x[p / x_div]
// for the rows p listed in tiles of TM, each tile with one weight matrix e. The MoE experts list the
// (token, slot) pairs grouped by expert (moe.wgsl's `group`), so that an expert's weights are read once
// per tile of pairs instead of once per pair; a dense linear lists the rows 0 .. M-1 in order, all with
// matrix 0 (ops/linear.py). Included by tiles.wgsl (f32/f16/bf16 weights) and tiles_q8.wgsl (Q8_0), which
// bind the weights from binding 5 on and define
//   fn w_quad(row: u32, q: u32) -> vec4<f32>   weights 4q .. 4q+3 of row `row` of the bound piece, zeros
//                                              past kdim.
//
// entry `main`:
//   GATE_UP = true:  out[p, f] = silu(W[e, f] . x[p / x_div]) * (W[e, N + f] . x[p / x_div])  (SwiGLU of
//                    an expert's fused gate_up rows)
//   GATE_UP = false: out[p, col_base + f] = W[e, f] . x[p / x_div]
//   Bindings: 0 params; 1 x: [rows, kdim] f32; 2 order: [tiles * TM] u32 (row ids, NO_PAIR for padding);
//             3 tile_expert: [tiles] i32 (each tile's matrix, -1 for none); 4 out: [P, ldo] f32;
//             5.. the weights, [E_piece, 2N or N, kdim].
//   Params:   pairs = P, n = N (outputs of this piece), kdim, x_div, e_base, e_count (the bound piece's
//             matrices: tiles of others return at once, so one dispatch per piece writes each row once),
//             ldo = out's row stride, col_base = this piece's first output column.
//   Dispatch: (ceil(N / TN), tiles) workgroups of 16 x 16 threads; each thread computes a 4 x 4 block
//             (4 rows x 4 outputs), twice over (gate and up) with GATE_UP.
// Tiles are TM = 64 rows by TN = 64 outputs. The K loop takes TK = 32 values a step (one Q8_0 block), x
// and weights as quads of 4 along K: each thread stages two x quads of one row and two weight quads of
// one weight row (and of its up row), the same rows every step, and loads the next step's quads while
// the workgroup computes this one. VEC = true needs kdim % 4 == 0 (x rows and weight quads on whole
// words); false reads element-wise.
//
// Every loop over a vector's components or a small array is written out: naga emits each WGSL loop as a
// while loop, which drivers do not unroll, so such a loop puts the vector or array in memory (a first
// version of this kernel with loops ran 5 times slower on an H200).

const TM: u32 = 64u;            // rows per tile (ops/tiles.py TILE_ROWS)
const TN: u32 = 64u;            // outputs per tile
const TK: u32 = 32u;            // K values per step
const QS: u32 = TK / 4u;        // quads per step
const STRIDE: u32 = TM / 4u;    // vec4s per k in a staged tile (TM = TN)
const TILE: u32 = TK * STRIDE;  // vec4s per staged tile
const HALF: u32 = TILE / 2u;    // from quad qi to quad qi + QS / 2 in a staged tile
const NO_PAIR: u32 = 0xffffffffu;
override GATE_UP: bool = true;
override VEC: bool = true;

struct TileParams { pairs: u32, n: u32, kdim: u32, x_div: u32, e_base: u32, e_count: u32, ldo: u32, col_base: u32 }

@group(0) @binding(0) var<uniform> tp: TileParams;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> order: array<u32>;
@group(0) @binding(3) var<storage, read> tile_expert: array<i32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// #include "lib/silu.wgsl"

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

struct Rows { x: u32, has_x: bool, w: u32, has_w: bool, qi: u32 }

fn load_step(k0: u32, r: Rows, quads: u32) -> Step {
    // Zeros written out rather than left to `var s: Step;`: naga does not re-zero such a var on every
    // call, and a padding row would stage stale values (never stored, but zeros keep the tile finite).
    let z = vec4<f32>(0.0);
    var s = Step(z, z, z, z, z, z);
    let qa = k0 + r.qi;
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

// One output row (pair) of a thread: four outputs from n on, gate (or down) values g, up values u.
fn store_row(pair: u32, n: u32, g: vec4<f32>, u: vec4<f32>) {
    if (pair == NO_PAIR) { return; }
    var v = g;
    if (GATE_UP) { v = vec4<f32>(silu(g.x) * u.x, silu(g.y) * u.y, silu(g.z) * u.z, silu(g.w) * u.w); }
    let o = pair * tp.ldo + tp.col_base + n;
    if (n < tp.n) { out[o] = v.x; }
    if (n + 1u < tp.n) { out[o + 1u] = v.y; }
    if (n + 2u < tp.n) { out[o + 2u] = v.z; }
    if (n + 3u < tp.n) { out[o + 3u] = v.w; }
}

// A thread's 4 x 4 block (twice with GATE_UP): gate (or down) rows g0..g3 and up rows u0..u3.
struct Acc { g0: vec4<f32>, g1: vec4<f32>, g2: vec4<f32>, g3: vec4<f32>,
             u0: vec4<f32>, u1: vec4<f32>, u2: vec4<f32>, u3: vec4<f32> }

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
    let e = tile_expert[wid.y] - i32(tp.e_base);
    if (e < 0 || u32(e) >= tp.e_count) { return; }  // the same for the whole workgroup
    let n0 = wid.x * TN;
    let slot0 = wid.y * TM;
    let quads = (tp.kdim + 3u) / 4u;
    // The rows this thread stages: pair row r of the tile and weight row r, quads qi and qi + 4 of a step.
    // Consecutive threads take consecutive rows, so the workgroup-memory stores fall in distinct banks.
    let r = li % TM;
    let pair = order[slot0 + r];
    let rows = Rows(select(0u, pair / tp.x_div, pair != NO_PAIR), pair != NO_PAIR,
                    u32(e) * select(1u, 2u, GATE_UP) * tp.n + n0 + r, n0 + r < tp.n, li / TM);
    let at = 4u * rows.qi * STRIDE + r / 4u;
    let c = r % 4u;
    // g_i, u_i: pair 4 * lid.y + i of the tile, outputs 4 * lid.x .. + 3.
    let z = vec4<f32>(0.0);
    var acc = Acc(z, z, z, z, z, z, z, z);
    var st = load_step(0u, rows, quads);
    for (var k0 = 0u; k0 < quads; k0 += QS) {
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
        if (k0 + QS < quads) { st = load_step(k0 + QS, rows, quads); }
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
    let row = slot0 + 4u * lid.y;
    let n = n0 + 4u * lid.x;
    store_row(order[row], n, acc.g0, acc.u0);
    store_row(order[row + 1u], n, acc.g1, acc.u1);
    store_row(order[row + 2u], n, acc.g2, acc.u2);
    store_row(order[row + 3u], n, acc.g3, acc.u3);
}
