// Where a workgroup and a thread sit in a dispatch of n workgroups. gpu/runtime.py's groups_for spreads n
// over x and y when it passes the per-dimension limit (65535), so a workgroup's flat index is
// wid.x + wid.y * nwg.x, and the grid's last row may hold indices past n, which kernels return from.
// An entry point takes `g: Grid` for those two builtins. thread_index and row_index count in the
// including shader's `override WG` (its workgroup size).

struct Grid {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
}

// The workgroup's flat index.
fn group_index(g: Grid) -> u32 {
    return g.wid.x + g.wid.y * g.nwg.x;
}

// One thread per item: the flat index of thread lid.
fn thread_index(g: Grid, lid: u32) -> u32 {
    return group_index(g) * WG + lid;
}

// `lanes` consecutive threads per item (a power of two dividing WG, as lib/reduce.wgsl's row_sum takes
// them), WG / lanes items a workgroup: the item of thread lid.
fn row_index(g: Grid, lid: u32, lanes: u32) -> u32 {
    return group_index(g) * (WG / lanes) + lid / lanes;
}
