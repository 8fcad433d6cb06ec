// Workgroup-wide sum and max of one f32 a thread, on subgroup operations: lib/reduce.wgsl's functions for
// adapters with the `subgroup` feature (a module that uses them does not compile without it, so they live
// in shaders/<op>_sg.wgsl files of their own; ops pick those through Runtime.subgroup_variant).
//
// subgroupAdd / subgroupMax within each subgroup, one slot a subgroup in workgroup memory, one barrier, then
// every subgroup reduces the slots again (lane i takes slots i, i + size, ...): one barrier in all. No
// subgroup size is assumed (8 on lavapipe, 32 on NVIDIA, 32 or 64 on AMD), nor how subgroups map onto
// local_invocation_index: the slot is the subgroup's id. Every subgroup reduces the same slots in the
// same lanes, so every thread gets the same bits.
//
// The including shader declares `override WG`. Call in uniform control flow, with a barrier between two
// calls of the same function (the next call's slot writes would race the previous call's reads); wg_sum
// and wg_max have arrays of their own, so one may follow the other directly.

struct Lanes {
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) n_sg: u32,
}

const RED_NEG_BIG: f32 = -3.0e38;  // max's identity (WGSL lets implementations assume no infinities)

var<workgroup> red_sum_slot: array<f32, WG>;  // one a subgroup (at most WG of them)
var<workgroup> red_max_slot: array<f32, WG>;

fn wg_sum(ln: Lanes, v: f32) -> f32 {
    let s = subgroupAdd(v);
    if (ln.sg_lane == 0u) { red_sum_slot[ln.sg_id] = s; }
    workgroupBarrier();
    var t = 0.0;
    for (var i = ln.sg_lane; i < ln.n_sg; i += ln.sg_size) { t += red_sum_slot[i]; }
    return subgroupAdd(t);
}

fn wg_max(ln: Lanes, v: f32) -> f32 {
    let s = subgroupMax(v);
    if (ln.sg_lane == 0u) { red_max_slot[ln.sg_id] = s; }
    workgroupBarrier();
    var t = RED_NEG_BIG;
    for (var i = ln.sg_lane; i < ln.n_sg; i += ln.sg_size) { t = max(t, red_max_slot[i]); }
    return subgroupMax(t);
}
