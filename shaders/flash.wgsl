// flash: attention of many queries at once (prefill, the encoders' windows), in blocks of queries that
// share every key they read. attention.wgsl's `main` and `segments` give each (token, head) a workgroup of
// its own, which reads all of its keys from memory: a 512-token prefill reads the cache ~256 times over.
// Here a workgroup of WGF = 128 threads takes BQ = 32 consecutive tokens of one head, TPQ = 4 threads a
// token, each thread holding a quarter of its query's vec4s (slots lane, lane + 4, ..., lane + 28: D <= 128)
// in registers, and walks the block's keys BK (8 or 16, an override) at a time: the tile's keys and values are staged in
// workgroup memory by all threads at once (and the next tile's loads go out before this tile is computed,
// so a tile costs one memory latency, not one per key), each thread's partial dot of every key of the tile
// goes to workgroup memory, a token's 4 threads add their partials into the tile's scores, and an online
// softmax (running max, sum and output, rescaled when the max rises) adds p_j v_j into each thread's slots
// of the output. Same results as attention.wgsl's entries up to f32 summation order.
//
// Entry `causal`: out[t, h] = softmax_j(scale q[t, h] . k[j, g]) v[j, g] over keys j in [lo, start + t],
//   lo = 0, or with a window W > 0 max(0, start + t - W + 1) (attention.wgsl's `main`); g = h / (Hq / n_kv).
// Entry `segments`: the same over keys bounds[2t] .. bounds[2t + 1] - 1 (attention.wgsl's `segments`:
//   bidirectional inside an encoder's windows).
// Bindings, params: attention.wgsl's `main`; `segments` binds bounds [T, 2] u32 at 4, in step's place (its
//   keys sit in cache rows 0 .. T - 1).
// Dispatch: ceil(T / BQ) * Hq workgroups, flat index (groups_for) = token block * Hq + h.

const BQ: u32 = 32u;      // tokens a workgroup
const TPQ: u32 = 4u;      // threads a token
const D4: u32 = 32u;      // vec4s of a staged key or value row (D <= 128)
override BK: u32 = 8u;    // keys a tile: 8 or 16 (BK * D4 <= 4 * WGF: a thread stages at most 4 vec4s of each)
override HD4: u32 = 32u;  // D / 4 (params' d4 is not read): a constant, so the slots past it fold away
const WGF: u32 = 128u;    // BQ * TPQ
const NEG_BIG: f32 = -3.0e38;  // stands in for -inf: WGSL lets implementations assume no infinities

struct AttnParams {
    n_tokens: u32, n_heads: u32, n_kv: u32, d4: u32,
    max_len: u32, window: u32, scale: f32, split: u32,
    n_splits: u32, _p0: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(0) var<uniform> p: AttnParams;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> cache_k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> cache_v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> step: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> bounds: array<u32>;  // segments: in step's place (keys from row 0)

// #include "lib/grid.wgsl"

var<workgroup> kt: array<vec4<f32>, BK * D4>;  // [key of the tile][vec4]: the tile's keys
var<workgroup> vt: array<vec4<f32>, BK * D4>;  // and values
var<workgroup> part: array<f32, BK * WGF>;     // [key of the tile][thread]: partial dots
var<workgroup> span: array<atomic<u32>, 2>;  // the block's key range: min lo, max hi
var<workgroup> span_u: vec2<u32>;            // the same, read back as a uniform value

// A thread's place: its token t, head h (kv head kvh), lane, and its token's key range [lo, hi).
struct Place { ok: bool, t: u32, h: u32, kvh: u32, lane: u32, row: u32, lo: u32, hi: u32 }

fn place(grid: Grid, lid: u32) -> Place {
    let flat = group_index(grid);
    let h = flat % p.n_heads;
    let row = lid / TPQ;
    let t = (flat / p.n_heads) * BQ + row;
    return Place(t < p.n_tokens, t, h, h / (p.n_heads / p.n_kv), lid % TPQ, row, 0u, 0u);
}

// The thread's query slots: vec4 lane + TPQ * s of its (token, head), zero past D / 4. Written out (a loop
// over a local array would put it in memory).
struct Slots { s0: vec4<f32>, s1: vec4<f32>, s2: vec4<f32>, s3: vec4<f32>,
               s4: vec4<f32>, s5: vec4<f32>, s6: vec4<f32>, s7: vec4<f32> }

fn slot_of(base: u32, lane: u32, s: u32, ok: bool) -> vec4<f32> {
    let i = lane + TPQ * s;
    if (!ok || i >= HD4) { return vec4<f32>(0.0); }
    return q[base + i];
}

fn load_q(pl: Place) -> Slots {
    let b = (pl.t * p.n_heads + pl.h) * HD4;
    return Slots(slot_of(b, pl.lane, 0u, pl.ok), slot_of(b, pl.lane, 1u, pl.ok), slot_of(b, pl.lane, 2u, pl.ok),
                 slot_of(b, pl.lane, 3u, pl.ok), slot_of(b, pl.lane, 4u, pl.ok), slot_of(b, pl.lane, 5u, pl.ok),
                 slot_of(b, pl.lane, 6u, pl.ok), slot_of(b, pl.lane, 7u, pl.ok));
}

// The staged tile's key jj (or value) at the thread's slot s, zero past D / 4.
fn k_at(jj: u32, lane: u32, s: u32) -> vec4<f32> {
    let i = lane + TPQ * s;
    if (i >= HD4) { return vec4<f32>(0.0); }
    return kt[jj * D4 + i];
}

fn v_at(jj: u32, lane: u32, s: u32) -> vec4<f32> {
    let i = lane + TPQ * s;
    if (i >= HD4) { return vec4<f32>(0.0); }
    return vt[jj * D4 + i];
}

// A thread's vec4s e = lid + i WGF of a tile's keys and of its values (i < BK * D4 / WGF), as loaded.
struct Stage { k0: vec4<f32>, k1: vec4<f32>, k2: vec4<f32>, k3: vec4<f32>,
               v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32> }

fn stage_at(pl: Place, c0: u32, k1: u32, e: u32) -> vec2<u32> {
    // (cache vec4 index, 1 if it exists) of tile element e = key * D4 + vec4
    let jj = e / D4;
    let c = e % D4;
    let ok = e < BK * D4 && c < HD4 && c0 + jj < k1;
    return vec2<u32>(((c0 + jj) * p.n_kv + pl.kvh) * HD4 + c, u32(ok));
}

fn load_stage(pl: Place, lid: u32, c0: u32, k1: u32) -> Stage {
    let z = vec4<f32>(0.0);
    var st = Stage(z, z, z, z, z, z, z, z);
    if (c0 >= k1) { return st; }
    let a = stage_at(pl, c0, k1, lid);
    let b = stage_at(pl, c0, k1, lid + WGF);
    let c = stage_at(pl, c0, k1, lid + 2u * WGF);
    let d = stage_at(pl, c0, k1, lid + 3u * WGF);
    if (a.y == 1u) { st.k0 = cache_k[a.x]; st.v0 = cache_v[a.x]; }
    if (b.y == 1u) { st.k1 = cache_k[b.x]; st.v1 = cache_v[b.x]; }
    if (c.y == 1u) { st.k2 = cache_k[c.x]; st.v2 = cache_v[c.x]; }
    if (d.y == 1u) { st.k3 = cache_k[d.x]; st.v3 = cache_v[d.x]; }
    return st;
}

fn partial_dot(qs: Slots, jj: u32, lane: u32) -> f32 {
    return (dot(qs.s0, k_at(jj, lane, 0u)) + dot(qs.s1, k_at(jj, lane, 1u)) + dot(qs.s2, k_at(jj, lane, 2u))
          + dot(qs.s3, k_at(jj, lane, 3u)))
         + (dot(qs.s4, k_at(jj, lane, 4u)) + dot(qs.s5, k_at(jj, lane, 5u)) + dot(qs.s6, k_at(jj, lane, 6u))
          + dot(qs.s7, k_at(jj, lane, 7u)));
}

fn add_v(acc: Slots, pj: f32, jj: u32, lane: u32) -> Slots {
    return Slots(acc.s0 + pj * v_at(jj, lane, 0u), acc.s1 + pj * v_at(jj, lane, 1u),
                 acc.s2 + pj * v_at(jj, lane, 2u), acc.s3 + pj * v_at(jj, lane, 3u),
                 acc.s4 + pj * v_at(jj, lane, 4u), acc.s5 + pj * v_at(jj, lane, 5u),
                 acc.s6 + pj * v_at(jj, lane, 6u), acc.s7 + pj * v_at(jj, lane, 7u));
}

fn scaled(a: Slots, f: f32) -> Slots {
    return Slots(a.s0 * f, a.s1 * f, a.s2 * f, a.s3 * f, a.s4 * f, a.s5 * f, a.s6 * f, a.s7 * f);
}

fn store_slot(base: u32, lane: u32, s: u32, v: vec4<f32>) {
    let i = lane + TPQ * s;
    if (i < HD4) { out[base + i] = v; }
}

// Key j's score for the thread's token (its 4 threads' partials added), NEG_BIG outside [lo, hi).
fn score(pl: Place, jj: u32, j: u32) -> f32 {
    let o = jj * WGF + pl.row * TPQ;
    let s = ((part[o] + part[o + 1u]) + (part[o + 2u] + part[o + 3u])) * p.scale;
    return select(NEG_BIG, s, pl.ok && j >= pl.lo && j < pl.hi);
}

// The online softmax of every token of the block over keys [k0, k1) (uniform over the workgroup), stored.
fn attend_block(pl: Place, lid: u32, k0: u32, k1: u32) {
    let qs = load_q(pl);
    let z = vec4<f32>(0.0);
    var acc = Slots(z, z, z, z, z, z, z, z);
    var m = NEG_BIG;
    var l = 0.0;
    var st = load_stage(pl, lid, k0, k1);
    for (var c0 = k0; c0 < k1; c0 += BK) {
        let n = min(BK, k1 - c0);
        kt[lid] = st.k0;
        kt[lid + WGF] = st.k1;
        vt[lid] = st.v0;
        vt[lid + WGF] = st.v1;
        if (BK == 16u) {
            kt[lid + 2u * WGF] = st.k2;
            kt[lid + 3u * WGF] = st.k3;
            vt[lid + 2u * WGF] = st.v2;
            vt[lid + 3u * WGF] = st.v3;
        }
        st = load_stage(pl, lid, c0 + BK, k1);  // in flight while this tile is computed
        workgroupBarrier();
        for (var jj = 0u; jj < n; jj++) { part[jj * WGF + lid] = partial_dot(qs, jj, pl.lane); }
        workgroupBarrier();
        var mt = NEG_BIG;
        for (var jj = 0u; jj < n; jj++) { mt = max(mt, score(pl, jj, c0 + jj)); }
        if (mt > NEG_BIG) {  // the token has keys in this tile
            let m_new = max(m, mt);
            // The first tile with keys sets alpha = 0 directly: exp(NEG_BIG - m) would overflow.
            let alpha = select(exp(m - m_new), 0.0, m == NEG_BIG);
            acc = scaled(acc, alpha);
            l *= alpha;
            for (var jj = 0u; jj < n; jj++) {
                let s = score(pl, jj, c0 + jj);
                if (s > NEG_BIG) {
                    let pj = exp(s - m_new);
                    l += pj;
                    acc = add_v(acc, pj, jj, pl.lane);
                }
            }
            m = m_new;
        }
        workgroupBarrier();  // the next tile overwrites kt, vt and part only after every read of this one
    }
    if (pl.ok) {
        let r = scaled(acc, select(0.0, 1.0 / l, l > 0.0));  // a token left with no key writes 0
        let b = (pl.t * p.n_heads + pl.h) * HD4;
        store_slot(b, pl.lane, 0u, r.s0);
        store_slot(b, pl.lane, 1u, r.s1);
        store_slot(b, pl.lane, 2u, r.s2);
        store_slot(b, pl.lane, 3u, r.s3);
        store_slot(b, pl.lane, 4u, r.s4);
        store_slot(b, pl.lane, 5u, r.s5);
        store_slot(b, pl.lane, 6u, r.s6);
        store_slot(b, pl.lane, 7u, r.s7);
    }
}

// The block's key range: the union of its tokens' ranges (every thread of a token proposes the same).
fn block_span(pl: Place, lid: u32) -> vec2<u32> {
    if (lid == 0u) {
        atomicStore(&span[0], 0xffffffffu);
        atomicStore(&span[1], 0u);
    }
    workgroupBarrier();
    if (pl.ok && pl.lo < pl.hi) {
        atomicMin(&span[0], pl.lo);
        atomicMax(&span[1], pl.hi);
    }
    workgroupBarrier();
    if (lid == 0u) {
        let lo = atomicLoad(&span[0]);
        span_u = vec2<u32>(lo, max(lo, atomicLoad(&span[1])));
    }
    // Uniform, so the key loop's bounds are too (its barriers stay in uniform control flow).
    return workgroupUniformLoad(&span_u);
}

@compute @workgroup_size(WGF)
fn causal(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    if (group_index(grid) >= ((p.n_tokens + BQ - 1u) / BQ) * p.n_heads) { return; }  // uniform per workgroup
    var pl = place(grid, lid);
    let pos = step[0] + pl.t;
    pl.hi = min(pos + 1u, p.max_len);
    if (p.window > 0u && pos + 1u > p.window) { pl.lo = pos + 1u - p.window; }
    let k = block_span(pl, lid);
    attend_block(pl, lid, k.x, k.y);
}

@compute @workgroup_size(WGF)
fn segments(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    if (group_index(grid) >= ((p.n_tokens + BQ - 1u) / BQ) * p.n_heads) { return; }
    var pl = place(grid, lid);
    if (pl.ok) {
        pl.lo = bounds[2u * pl.t];
        pl.hi = min(bounds[2u * pl.t + 1u], p.max_len);
    }
    let k = block_span(pl, lid);
    attend_block(pl, lid, k.x, k.y);
}
