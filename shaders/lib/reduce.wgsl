// Workgroup-wide sum and max of one f32 a thread, in workgroup memory (no subgroup operations).
// lib/reduce_sg.wgsl has the same functions on subgroup operations, for adapters with the `subgroup`
// feature: a shader includes one of the two, and its entry points take their builtins as `ln: Lanes`, so
// the kernels between them are the same text (shaders/<op>.wgsl and shaders/<op>_sg.wgsl).
//
// Two levels instead of a log2(WG)-deep tree: WG / 16 threads each add 16 values (16 independent reads), then
// every thread adds the WG / 16 partials itself (WG / 64 vec4 reads, the same order in every thread, so
// every thread gets the same bits): two barriers in all, where a tree takes log2(WG) + 1, each waiting on
// the workgroup-memory round trip before it.
//
// The including shader declares `override WG` (a power of two, 16 to 1024). Call in uniform control flow
// (there are barriers), with a barrier between two calls of the same function (reduce_sg's versions reuse
// their array; these two would not need it). `red_*` names are this file's.

struct Lanes { @builtin(local_invocation_index) lid: u32 }

const RED_FIRST: u32 = 16u;  // values each first-level thread adds
const RED_NEG_BIG: f32 = -3.0e38;  // max's identity (WGSL lets implementations assume no infinities)

var<workgroup> red_in: array<f32, WG>;        // one value a thread
// Sized for WG up to 1024 rather than by WG / 64: naga 29 panics on a pipeline whose module declares an
// override after an array sized by an override expression, and the including shaders declare theirs after
// this file. (wgpu zero-fills a kernel's workgroup memory at its start, so the arrays stay small.)
var<workgroup> red_mid: array<vec4<f32>, 16>;  // one value a first-level thread

// Thread lid's value into red_in, visible to the first-level threads (thread g < WG / 16 reads 16g .. 16g + 15).
fn red_stage(lid: u32, v: f32) {
    red_in[lid] = v;
    workgroupBarrier();
}

// Values 16g + 4i .. 16g + 4i + 3 of red_in.
fn red_in4(g: u32, i: u32) -> vec4<f32> {
    let b = 16u * g + 4u * i;
    return vec4<f32>(red_in[b], red_in[b + 1u], red_in[b + 2u], red_in[b + 3u]);
}

fn red_first_sum(g: u32) -> f32 {
    return dot((red_in4(g, 0u) + red_in4(g, 1u)) + (red_in4(g, 2u) + red_in4(g, 3u)), vec4<f32>(1.0));
}

fn red_first_max(g: u32) -> f32 {
    let m = max(max(red_in4(g, 0u), red_in4(g, 1u)), max(red_in4(g, 2u), red_in4(g, 3u)));
    return max(max(m.x, m.y), max(m.z, m.w));
}

fn wg_sum(ln: Lanes, v: f32) -> f32 {
    red_stage(ln.lid, v);
    // Threads WG / 16 .. 3 (WG < 64 only) pad red_mid's one vec4 with the identity.
    if (ln.lid < WG / RED_FIRST) {
        red_mid[ln.lid / 4u][ln.lid % 4u] = red_first_sum(ln.lid);
    } else if (ln.lid < 4u) {
        red_mid[0][ln.lid] = 0.0;
    }
    workgroupBarrier();
    var s = red_mid[0];
    for (var i = 1u; i < WG / 64u; i++) { s += red_mid[i]; }
    return (s.x + s.y) + (s.z + s.w);
}

fn wg_max(ln: Lanes, v: f32) -> f32 {
    red_stage(ln.lid, v);
    if (ln.lid < WG / RED_FIRST) {
        red_mid[ln.lid / 4u][ln.lid % 4u] = red_first_max(ln.lid);
    } else if (ln.lid < 4u) {
        red_mid[0][ln.lid] = RED_NEG_BIG;
    }
    workgroupBarrier();
    var m = red_mid[0];
    for (var i = 1u; i < WG / 64u; i++) { m = max(m, red_mid[i]); }
    return max(max(m.x, m.y), max(m.z, m.w));
}
