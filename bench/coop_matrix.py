"""Does this adapter run wgpu's experimental cooperative matrices (tensor cores through WGSL), and how fast?

    python bench/coop_matrix.py [--out FILE]

Records the adapter's features, whether a device with `cooperative-matrix` can be had, and, where it can:
an 8 x 8 f32 coopMultiplyAdd kernel checked against numpy, whether a 16 x 16 f16 type compiles, and a
64 x 64-tile matmul of f32 activations by bf16 weights staged through workgroup memory (the shape our
prefill matmul would take), checked and timed (wall clock, median of 5 submissions of 10 dispatches) at
the thinker's prefill shapes. Our f32-FMA matmul on the same shapes: bench/kernels.py --matmul.

On the H200 with wgpu-native 29 (wgpu-py 0.32) the adapter lists the feature, and requesting it fails:
"experimental features are not enabled"; wgpu-native's C API has no switch for them (wgpu.h), so no
kernel can use the matrix units through it yet (bench/results/coop_matrix_h200.json).
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import wgpu

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from omni_lab.atomic import write_text

report: dict = {}


def log(k, v):
    report[k] = v
    print(k, json.dumps(v, default=str)[:2000], flush=True)


adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
log("adapter", dict(adapter.info))
log("features", sorted(adapter.features))
want = [f for f in ("cooperative-matrix", "shader-f16", "subgroup", "timestamp-query") if f in adapter.features]
limits = {k: adapter.limits[k] for k in ("max-storage-buffer-binding-size", "max-buffer-size",
                                          "max-compute-workgroup-storage-size", "max-compute-invocations-per-workgroup")}
try:
    device = adapter.request_device_sync(required_features=want, required_limits=limits)
    log("device", want)
except Exception as e:  # noqa: BLE001
    log("device_error", repr(e))
    want = [f for f in want if f != "cooperative-matrix"]
    device = adapter.request_device_sync(required_features=want, required_limits=limits)

for attr in ("cooperative_matrix_properties", "get_cooperative_matrix_properties"):
    if hasattr(adapter, attr):
        try:
            v = getattr(adapter, attr)
            log("coop_props", str(v() if callable(v) else v))
        except Exception as e:  # noqa: BLE001
            log("coop_props_error", repr(e))

HEAD = "enable wgpu_cooperative_matrix;\n"

NAIVE = HEAD + """
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<uniform> dims: vec4<u32>;
@compute @workgroup_size(32)
fn main(@builtin(workgroup_id) wid: vec3<u32>) {
    let m0 = wid.x * 8u; let n0 = wid.y * 8u; let K = dims.z; let N = dims.y;
    var acc = coop_mat8x8<f32, C>();
    for (var k = 0u; k < K; k += 8u) {
        let at = coopLoadT<coop_mat8x8<f32, A>>(&a[m0 * K + k], K);
        let bt = coopLoadT<coop_mat8x8<f32, B>>(&b[k * N + n0], N);
        acc = coopMultiplyAdd(at, bt, acc);
    }
    coopStoreT(acc, &c[m0 * N + n0], N);
}
"""

# C[M, N] = X[M, K] W[N, K]^T, W bf16 packed two per u32; tile 64 x 64, 4 subgroups of 32 each 32 x 32.
STAGED = HEAD + """
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<uniform> dims: vec4<u32>;
const TK: u32 = 32u;
var<workgroup> xs: array<f32, 64 * 32>;   // [m][k]
var<workgroup> ws: array<f32, 64 * 32>;   // [n][k]
@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let M = dims.x; let N = dims.y; let K = dims.z;
    let m0 = wid.y * 64u; let n0 = wid.x * 64u;
    let sg = li / 32u;
    let sm = (sg / 2u) * 32u; let sn = (sg % 2u) * 32u;
    var c00 = coop_mat8x8<f32, C>(); var c01 = coop_mat8x8<f32, C>(); var c02 = coop_mat8x8<f32, C>(); var c03 = coop_mat8x8<f32, C>();
    var c10 = coop_mat8x8<f32, C>(); var c11 = coop_mat8x8<f32, C>(); var c12 = coop_mat8x8<f32, C>(); var c13 = coop_mat8x8<f32, C>();
    var c20 = coop_mat8x8<f32, C>(); var c21 = coop_mat8x8<f32, C>(); var c22 = coop_mat8x8<f32, C>(); var c23 = coop_mat8x8<f32, C>();
    var c30 = coop_mat8x8<f32, C>(); var c31 = coop_mat8x8<f32, C>(); var c32 = coop_mat8x8<f32, C>(); var c33 = coop_mat8x8<f32, C>();
    for (var k0 = 0u; k0 < K; k0 += TK) {
        // 64 rows x 32 k of x: 2048 values, 16 per thread, as 4 vec4-ish runs
        for (var e = li; e < 64u * 32u; e += 128u) {
            let r = e / 32u; let k = e % 32u;
            xs[e] = x[(m0 + r) * K + k0 + k];
        }
        for (var e = li; e < 64u * 16u; e += 128u) {
            let r = e / 16u; let q = e % 16u;
            let word = w[((n0 + r) * K + k0) / 2u + q];
            ws[r * 32u + 2u * q] = bitcast<f32>(word << 16u);
            ws[r * 32u + 2u * q + 1u] = bitcast<f32>(word & 0xffff0000u);
        }
        workgroupBarrier();
        for (var k = 0u; k < TK; k += 8u) {
            let a0 = coopLoadT<coop_mat8x8<f32, A>>(&xs[(sm + 0u) * 32u + k], 32u);
            let a1 = coopLoadT<coop_mat8x8<f32, A>>(&xs[(sm + 8u) * 32u + k], 32u);
            let a2 = coopLoadT<coop_mat8x8<f32, A>>(&xs[(sm + 16u) * 32u + k], 32u);
            let a3 = coopLoadT<coop_mat8x8<f32, A>>(&xs[(sm + 24u) * 32u + k], 32u);
            let b0 = coopLoad<coop_mat8x8<f32, B>>(&ws[(sn + 0u) * 32u + k], 32u);
            let b1 = coopLoad<coop_mat8x8<f32, B>>(&ws[(sn + 8u) * 32u + k], 32u);
            let b2 = coopLoad<coop_mat8x8<f32, B>>(&ws[(sn + 16u) * 32u + k], 32u);
            let b3 = coopLoad<coop_mat8x8<f32, B>>(&ws[(sn + 24u) * 32u + k], 32u);
            c00 = coopMultiplyAdd(a0, b0, c00); c01 = coopMultiplyAdd(a0, b1, c01); c02 = coopMultiplyAdd(a0, b2, c02); c03 = coopMultiplyAdd(a0, b3, c03);
            c10 = coopMultiplyAdd(a1, b0, c10); c11 = coopMultiplyAdd(a1, b1, c11); c12 = coopMultiplyAdd(a1, b2, c12); c13 = coopMultiplyAdd(a1, b3, c13);
            c20 = coopMultiplyAdd(a2, b0, c20); c21 = coopMultiplyAdd(a2, b1, c21); c22 = coopMultiplyAdd(a2, b2, c22); c23 = coopMultiplyAdd(a2, b3, c23);
            c30 = coopMultiplyAdd(a3, b0, c30); c31 = coopMultiplyAdd(a3, b1, c31); c32 = coopMultiplyAdd(a3, b2, c32); c33 = coopMultiplyAdd(a3, b3, c33);
        }
        workgroupBarrier();
    }
    let o = (m0 + sm) * N + n0 + sn;
    coopStoreT(c00, &c[o], N); coopStoreT(c01, &c[o + 8u], N); coopStoreT(c02, &c[o + 16u], N); coopStoreT(c03, &c[o + 24u], N);
    coopStoreT(c10, &c[o + 8u * N], N); coopStoreT(c11, &c[o + 8u * N + 8u], N); coopStoreT(c12, &c[o + 8u * N + 16u], N); coopStoreT(c13, &c[o + 8u * N + 24u], N);
    coopStoreT(c20, &c[o + 16u * N], N); coopStoreT(c21, &c[o + 16u * N + 8u], N); coopStoreT(c22, &c[o + 16u * N + 16u], N); coopStoreT(c23, &c[o + 16u * N + 24u], N);
    coopStoreT(c30, &c[o + 24u * N], N); coopStoreT(c31, &c[o + 24u * N + 8u], N); coopStoreT(c32, &c[o + 24u * N + 16u], N); coopStoreT(c33, &c[o + 24u * N + 24u], N);
}
"""

F16 = "enable f16;\n" + HEAD + """
@group(0) @binding(0) var<storage, read> a: array<f16>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@compute @workgroup_size(32)
fn main() {
    let at = coopLoadT<coop_mat16x16<f16, A>>(&a[0], 16u);
    var acc = coop_mat16x16<f32, C>();
    acc = coopMultiplyAdd(at, coopLoadT<coop_mat16x16<f16, B>>(&a[0], 16u), acc);
    coopStoreT(acc, &c[0], 16u);
}
"""


def build(name, code):
    try:
        mod = device.create_shader_module(code=code)
        pipe = device.create_compute_pipeline(layout="auto", compute={"module": mod, "entry_point": "main"})
        log(f"build_{name}", "ok")
        return pipe
    except Exception as e:  # noqa: BLE001
        log(f"build_{name}", repr(e)[:1500])
        return None


def buf(arr):
    return device.create_buffer_with_data(data=np.ascontiguousarray(arr).tobytes(),
                                          usage=wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC)


def run(pipe, bufs, grid, reps=1):
    entries = []
    for i, b in enumerate(bufs):
        entries.append({"binding": i, "resource": {"buffer": b, "offset": 0, "size": b.size}})
    bg = device.create_bind_group(layout=pipe.get_bind_group_layout(0), entries=entries)
    enc = device.create_command_encoder()
    cp = enc.begin_compute_pass()
    cp.set_pipeline(pipe)
    cp.set_bind_group(0, bg)
    for _ in range(reps):
        cp.dispatch_workgroups(*grid)
    cp.end()
    t0 = time.perf_counter()
    device.queue.submit([enc.finish()])
    device.queue.read_buffer(bufs[2], 0, 16)
    return time.perf_counter() - t0


def bf16(a):
    u = a.astype(np.float32).view(np.uint32)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return r, (r.astype(np.uint32) << 16).view(np.float32)


rng = np.random.default_rng(0)
SHAPES = ((512, 4096, 2048), (512, 2048, 4096), (512, 4096, 4096))  # bench/kernels.py MATMUL_SHAPES
if "cooperative-matrix" in want:
    p = build("naive8", NAIVE)
    if p is not None:
        M = N = K = 64
        a = rng.standard_normal((M, K), dtype=np.float32)
        b = rng.standard_normal((K, N), dtype=np.float32)
        cb = buf(np.zeros((M, N), np.float32))
        ub = device.create_buffer_with_data(data=np.array([M, N, K, 0], np.uint32).tobytes(), usage=wgpu.BufferUsage.UNIFORM)
        run(p, [buf(a), buf(b), cb, ub], (M // 8, N // 8, 1))
        got = np.frombuffer(device.queue.read_buffer(cb), np.float32).reshape(M, N)
        ref = a.astype(np.float64) @ b
        log("naive8_rel_err", float(np.abs(got - ref).max() / np.abs(ref).max()))
    build("f16_16x16", F16)
    p = build("staged", STAGED)
    if p is not None:
        for (M, N, K) in SHAPES:
            x = rng.standard_normal((M, K), dtype=np.float32)
            wb, wf = bf16(rng.standard_normal((N, K), dtype=np.float32))
            cb = buf(np.zeros((M, N), np.float32))
            ub = device.create_buffer_with_data(data=np.array([M, N, K, 0], np.uint32).tobytes(), usage=wgpu.BufferUsage.UNIFORM)
            bufs = [buf(x), buf(wb.view(np.uint32)), cb, ub]
            run(p, bufs, (N // 64, M // 64, 1))
            got = np.frombuffer(device.queue.read_buffer(cb), np.float32).reshape(M, N)
            ref = x.astype(np.float64) @ wf.T.astype(np.float64)
            err = float(np.mean((got - ref) ** 2) / np.mean(ref ** 2))
            ts = [run(p, bufs, (N // 64, M // 64, 1), reps=10) / 10 for _ in range(5)]
            t = statistics.median(ts)
            log(f"staged_{M}x{N}x{K}", {"nmse": err, "s": t, "tflops": 2 * M * N * K / t / 1e12})

out = Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else None
if out:
    write_text(out, json.dumps(report, indent=1, default=str))
