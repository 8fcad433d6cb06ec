// matvec: y[row_base + n] = sum_k W[n, k] * x[k] for one token (decode).
//
// Bindings: 0 params; 1 x: [K] f32; 2 w: [N, K] weight rows of this piece, packed per WTYPE
//           (f32: one per u32; f16 and bf16: two per u32, element 2j in the low half); 3 y: [N_total] f32.
// Params:   n = rows in this piece, k = K, row_base = first output row of this piece (binding splits).
// Dispatch: one workgroup of WG threads per row, flat index wid.x + wid.y * nwg.x (groups_for).
// Entry points: `main` needs K % 8 == 0 (16-byte weight loads); `main_ragged` takes any K.
// Accumulation is f32; each thread keeps two partial sums so two loads are in flight.

override WG: u32 = 256;
override WTYPE: u32 = 2u;  // 0 f32, 1 f16, 2 bf16

struct Params { n: u32, k: u32, row_base: u32, _pad: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

var<workgroup> partial: array<f32, WG>;

fn lo(u: u32) -> f32 {
    if (WTYPE == 1u) { return unpack2x16float(u).x; }
    return bitcast<f32>(u << 16u);
}

fn hi(u: u32) -> f32 {
    if (WTYPE == 1u) { return unpack2x16float(u).y; }
    return bitcast<f32>(u & 0xffff0000u);
}

// Dot product of 8 packed 16-bit weights (one vec4<u32>) with x[8j .. 8j+7].
fn dot8(u: vec4<u32>, j: u32) -> f32 {
    let a = x[2u * j];
    let b = x[2u * j + 1u];
    return dot(vec4<f32>(lo(u.x), hi(u.x), lo(u.y), hi(u.y)), a)
         + dot(vec4<f32>(lo(u.z), hi(u.z), lo(u.w), hi(u.w)), b);
}

fn reduce_and_store(lid: u32, row: u32, acc: f32) {
    partial[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { partial[lid] += partial[lid + s]; }
        workgroupBarrier();
    }
    if (lid == 0u) { y[p.row_base + row] = partial[0]; }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.n) { return; }  // uniform per workgroup, so the barriers below stay uniform
    var acc0 = 0.0;
    var acc1 = 0.0;
    if (WTYPE == 0u) {
        let per_row = p.k / 4u;  // vec4 of f32 weights
        let base = row * per_row;
        var j = lid;
        for (; j + WG < per_row; j += 2u * WG) {
            acc0 += dot(bitcast<vec4<f32>>(w[base + j]), x[j]);
            acc1 += dot(bitcast<vec4<f32>>(w[base + j + WG]), x[j + WG]);
        }
        if (j < per_row) { acc0 += dot(bitcast<vec4<f32>>(w[base + j]), x[j]); }
    } else {
        let per_row = p.k / 8u;  // vec4<u32> of 8 packed 16-bit weights
        let base = row * per_row;
        var j = lid;
        for (; j + WG < per_row; j += 2u * WG) {
            acc0 += dot8(w[base + j], j);
            acc1 += dot8(w[base + j + WG], j + WG);
        }
        if (j < per_row) { acc0 += dot8(w[base + j], j); }
    }
    reduce_and_store(lid, row, acc0 + acc1);
}

fn weight(e: u32) -> f32 {
    let word = w[e / (4u * select(2u, 1u, WTYPE == 0u))];
    if (WTYPE == 0u) { return bitcast<f32>(word[e % 4u]); }
    let u = word[(e / 2u) % 4u];
    return select(lo(u), hi(u), (e & 1u) == 1u);
}

@compute @workgroup_size(WG)
fn main_ragged(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.n) { return; }
    var acc = 0.0;
    for (var k = lid; k < p.k; k += WG) {
        acc += weight(row * p.k + k) * x[k / 4u][k % 4u];
    }
    reduce_and_store(lid, row, acc);
}
