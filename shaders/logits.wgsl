// logits: what Transformers' logits processors and sampling warpers do to one row of logits, on the GPU, so
// that a generation loop (the talker's frames, the code predictor's 15 codebooks) never returns to the host
// between tokens.
//
// Entry `process`: the talker's processors in Transformers' order (RepetitionPenaltyLogitsProcessor, then
// SuppressTokensLogitsProcessor), in place.
//   logits[i] -> (seen[i] != 0 ? (logits[i] < 0 ? logits[i] * penalty : logits[i] / penalty) : logits[i]),
//   then -inf where lo <= i < hi and i != keep.
//   Bindings: 0 params; 1 logits: [V] f32 (read_write); 2 seen: [V] u32.
//   Params:   v, lo, hi, keep (-1: none), penalty (1.0: none).
//   Dispatch: one thread per entry, workgroups of WG, flat index (groups_for).
//
// Entry `mark`: seen[id[0]] = 1 (a token generated: from now on the repetition penalty applies to it).
//   Bindings: 0 params; 1 seen: [V] u32 (read_write); 2 id: [1] i32.
//   Params:   v. Dispatch: one workgroup (its first thread writes).
//
// Entry `sample`: one draw from the k candidates of ops/select.topk (sorted descending), as Transformers'
// warpers draw (temperature, then top-p over the top-k, then a multinomial draw), with a counter-based
// random number: u = hash(seed, counter[0], stream) in [0, 1). counter is a GPU buffer (a decoder's step
// buffer: the position), stream a constant per call site, so a replayed step draws anew each time and a
// seed repeats a whole generation.
//   Bindings: 0 params; 1 values: [k] f32; 2 indices: [k] i32; 3 counter: [4] u32; 4 out: [1] i32 (read_write).
//   Params:   k, stream, seed, temperature, top_p. Dispatch: one workgroup (its first thread draws).

override WG: u32 = 256;

struct Params { v: u32, lo: u32, hi: u32, keep: i32, penalty: f32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;
@group(0) @binding(2) var<storage, read> seen: array<u32>;

// #include "lib/grid.wgsl"

@compute @workgroup_size(WG)
fn process(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = group_index(grid) * WG + lid;
    if (i >= p.v) { return; }
    var x = logits[i];
    if (seen[i] != 0u) {
        x = select(x / p.penalty, x * p.penalty, x < 0.0);
    }
    if (i >= p.lo && i < p.hi && i32(i) != p.keep) {
        x = bitcast<f32>(0xff800000u);  // -inf, as torch.where(mask, -inf, scores)
    }
    logits[i] = x;
}

@group(0) @binding(0) var<uniform> pm: Params;
@group(0) @binding(1) var<storage, read_write> seen_w: array<u32>;
@group(0) @binding(2) var<storage, read> token: array<i32>;

@compute @workgroup_size(WG)
fn mark(@builtin(local_invocation_index) lid: u32) {
    let t = token[0];
    if (lid == 0u && t >= 0 && u32(t) < pm.v) { seen_w[u32(t)] = 1u; }
}

struct SampleParams { k: u32, stream: u32, seed: u32, _p0: u32, temperature: f32, top_p: f32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> ps: SampleParams;
@group(0) @binding(1) var<storage, read> values: array<f32>;
@group(0) @binding(2) var<storage, read> indices: array<i32>;
@group(0) @binding(3) var<storage, read> counter: array<u32>;
@group(0) @binding(4) var<storage, read_write> drawn: array<i32>;

// PCG's output permutation (O'Neill 2014) as a hash: consecutive counters give independent-looking words.
fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

@compute @workgroup_size(1)
fn sample() {
    // p_i = exp((v_i - v_0) / T): softmax numerators, the largest 1, so nothing overflows.
    var total = 0.0;
    for (var i = 0u; i < ps.k; i++) { total += exp((values[i] - values[0]) / ps.temperature); }
    // top-p: keep candidate i while the mass before it is below top_p (Transformers' TopPLogitsWarper keeps
    // the same prefix: it drops a token once the sorted mass at or below it is at most 1 - top_p).
    var kept = 0u;
    var mass = 0.0;
    loop {
        if (kept >= ps.k || (kept > 0u && mass >= ps.top_p * total)) { break; }
        mass += exp((values[kept] - values[0]) / ps.temperature);
        kept++;
    }
    let word = pcg(pcg(pcg(ps.seed) ^ counter[0]) ^ ps.stream);
    let u = f32(word >> 8u) * (1.0 / 16777216.0);  // 24 bits: exact in f32, in [0, 1)
    var acc = 0.0;
    var pick = kept - 1u;
    for (var i = 0u; i < kept; i++) {
        acc += exp((values[i] - values[0]) / ps.temperature);
        if (u * mass < acc) { pick = i; break; }
    }
    drawn[0] = indices[pick];
}
