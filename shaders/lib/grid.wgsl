// Where a workgroup sits in a dispatch of n workgroups. gpu/runtime.py's groups_for spreads n over x and y
// when it passes the per-dimension limit (65535), so a workgroup's flat index is wid.x + wid.y * nwg.x,
// and the grid's last row may hold indices past n, which kernels return from. An entry point takes
// `grid: Grid` for those two builtins; one thread per item is item group_index(grid) * WG + lid.

struct Grid {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
}

fn group_index(grid: Grid) -> u32 {
    return grid.wid.x + grid.wid.y * grid.nwg.x;
}
