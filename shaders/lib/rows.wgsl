// Rows of threads: a workgroup of WG threads works on WG / lanes rows at once, `lanes` consecutive threads
// per row (a power of two dividing WG; lanes = WG makes the whole workgroup one row). The including shader
// declares `override WG`. row_sum and row_max reduce each row as a tree in one workgroup array (thread i
// takes in i + s for s = lanes / 2, lanes / 4, ..., 1) and give every thread its row's result; call them
// in uniform control flow (they have barriers), with a barrier between two calls (they reuse the array).
// #include "lib/grid.wgsl"

var<workgroup> partial: array<f32, WG>;

// The row of thread lid, in a dispatch of WG / lanes rows a workgroup.
fn thread_row(grid: Grid, lid: u32, lanes: u32) -> u32 {
    return group_index(grid) * (WG / lanes) + lid / lanes;
}

fn row_sum(lid: u32, lanes: u32, acc: f32) -> f32 {
    partial[lid] = acc;
    workgroupBarrier();
    let lane = lid % lanes;
    for (var s = lanes / 2u; s > 0u; s = s / 2u) {
        if (lane < s) { partial[lid] += partial[lid + s]; }
        workgroupBarrier();
    }
    return partial[lid - lane];
}

fn row_max(lid: u32, lanes: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    let lane = lid % lanes;
    for (var s = lanes / 2u; s > 0u; s = s / 2u) {
        if (lane < s) { partial[lid] = max(partial[lid], partial[lid + s]); }
        workgroupBarrier();
    }
    return partial[lid - lane];
}
