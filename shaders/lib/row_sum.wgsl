// Sums over rows of threads: a workgroup of WG threads works on WG / lanes rows at once, `lanes`
// consecutive threads per row (a power of two dividing WG). Declares the workgroup array it uses; call
// in uniform control flow (it has barriers). Every thread gets its row's total.

var<workgroup> partial: array<f32, WG>;

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
