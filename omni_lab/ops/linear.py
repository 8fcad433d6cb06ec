"""Linear layers: matvec (decode, one token) and matmul (prefill, through ops/tiles.py), f32/f16/bf16
weights, f32 math.

Weights are in nn.Linear's [out, in] layout. A weight larger than the storage-binding limit is bound in
row pieces at aligned offsets and dispatched once per piece, each piece writing its own output rows.
"""

from __future__ import annotations

import numpy as np

from ..gpu import Tensor, bf16_bits, bf16_to_f32, pack_params, runtime, tuning
from ._check import dtype_in, expect
from .registry import NMSE_MATMUL, padded_output, rand, require, sweep

WTYPE = {"f32": 0, "f16": 1, "bf16": 2}
WEIGHT_DTYPES = tuple(WTYPE)


def _out(out: Tensor | None, shape, kernel: str) -> Tensor:
    if out is None:
        return runtime().empty(shape, "f32", label=kernel)
    expect(kernel, out.shape == tuple(shape) and out.dtype == "f32", f"out must be {tuple(shape)} f32", out=out)
    return out


def _pieces(w: Tensor):
    gpu = runtime().gpu
    return w.row_pieces(gpu.max_binding, gpu.offset_alignment)


def default_tpr(dtype: str) -> int:
    """The least threads per row of a matvec over `dtype` weights (the tuning table's, gpu/tuning.py)."""
    t = tuning.current()
    return t.matvec_tpr_f32 if dtype == "f32" else t.matvec_tpr_16bit


def launch_tpr(rows: int, words: int, floor: int, wg: int) -> int:
    """Threads per output row for a row-reduction launch (matvec, MoE experts) in workgroups of `wg`:
    from `floor`, doubled while the launch has fewer than the tuning table's launch_threads, the width is
    under `wg`, and each thread still has a 16-byte weight word (or Q8_0 block) of the row's `words`.
    A decode launch of few rows at the floor width is latency, not bandwidth: each thread waits on a chain
    of serial loads (MoE router: 14 us at 16 threads a row, 7 us at 256 on an H200); more threads a row
    put more loads in flight."""
    launch_threads = tuning.current().launch_threads
    tpr = floor
    while tpr < wg and rows * tpr < launch_threads and 2 * tpr <= words:
        tpr *= 2
    return tpr


def matvec_tpr(n: int, k: int, dtype: str) -> int:
    """Threads per row for a matvec of n rows of k weights: launch_tpr from the dtype's default."""
    return launch_tpr(n, k // (4 if dtype == "f32" else 8), default_tpr(dtype), tuning.current().matvec_wg)


def matvec(x: Tensor, w: Tensor, out: Tensor | None = None, threads_per_row: int | None = None) -> Tensor:
    """y = W x. x: [K] or [1, K] f32; w: [N, K] f32/f16/bf16; returns [N] or [1, N] f32.
    threads_per_row: a power of two up to the tuning table's matvec_wg (default: matvec_tpr of the whole
    weight)."""
    dtype_in("matvec", "x", x, ("f32",))
    dtype_in("matvec", "w", w, WEIGHT_DTYPES)
    expect("matvec", len(w.shape) == 2 and x.shape in ((w.shape[1],), (1, w.shape[1])),
           "x must be [K] or [1, K] with K = w.shape[1]", x=x, w=w)
    n, k = w.shape
    y = _out(out, x.shape[:-1] + (n,), "matvec")
    vector = k % (4 if w.dtype == "f32" else 8) == 0
    wg = tuning.current().matvec_wg
    threads_per_row = threads_per_row or matvec_tpr(n, k, w.dtype)
    kern = runtime().kernel("matvec", "main" if vector else "main_ragged", WG=wg, TPR=threads_per_row, WTYPE=WTYPE[w.dtype])
    rows_per_group = wg // threads_per_row
    for row0, piece in _pieces(w):
        kern(-(-piece.shape[0] // rows_per_group), pack_params(piece.shape[0], k, row0, 0, 0, 0, 0, 0), x, piece, y)
    return y


def matvec_swiglu(gate: Tensor, up: Tensor, w: Tensor, out: Tensor | None = None,
                  threads_per_row: int | None = None) -> Tensor:
    """y = W (silu(gate) * up) for one token, the product formed as the weights are read (a SwiGLU MLP's
    down projection with its elementwise step inside). gate, up: [F] or [1, F] f32; w: [N, F] 16-bit or
    f32 with F % 8 == 0 (F % 4 for f32: `swiglu_ok`); returns [N] or [1, N] f32."""
    expect("matvec_swiglu", swiglu_ok(gate, up, w), "gate and up must be the same [F] or [1, F] f32, w [N, F] "
           "f32/f16/bf16 within one binding, F % 8 == 0 (4 for f32)", gate=gate, up=up, w=w)
    n, k = w.shape
    y = _out(out, gate.shape[:-1] + (n,), "matvec_swiglu")
    wg = tuning.current().matvec_wg
    tpr = threads_per_row or matvec_tpr(n, k, w.dtype)
    kern = runtime().kernel("matvec", "swiglu", WG=wg, TPR=tpr, WTYPE=WTYPE[w.dtype])
    kern(-(-n // (wg // tpr)), pack_params(n, k, 0, 0, 0, 0, 0, 0), gate, w, y, up)
    return y


def swiglu_ok(gate: Tensor, up: Tensor, w) -> bool:
    return (isinstance(w, Tensor) and len(w.shape) == 2 and w.dtype in WTYPE and gate.dtype == up.dtype == "f32"
            and gate.shape == up.shape and gate.shape in ((w.shape[1],), (1, w.shape[1]))
            and w.shape[1] % (4 if w.dtype == "f32" else 8) == 0 and w.bind_size <= runtime().gpu.max_binding)


def matvec_multi(x: Tensor, ws: tuple[Tensor, ...], outs: tuple[Tensor, ...],
                 threads_per_row: int | None = None) -> tuple[Tensor, ...]:
    """Two or three matvecs of the same x ([K] or [1, K] f32) in one dispatch: outs[i] = ws[i] x.
    The weights share a dtype, K % 8 == 0 (K % 4 for f32), and each fits one binding; `multi_ok` says
    whether a set qualifies (otherwise call matvec per weight). threads_per_row: as matvec's, for all
    the rows together."""
    expect("matvec_multi", multi_ok(x, ws), "weights must share a dtype and K, K % 8 == 0 (4 for f32), "
           "each within one binding, 2 or 3 of them", x=x, **{f"w{i}": w for i, w in enumerate(ws)})
    n = [w.shape[0] for w in ws] + [0] * (3 - len(ws))
    for w, y in zip(ws, outs):
        expect("matvec_multi", y.shape == x.shape[:-1] + (w.shape[0],) and y.dtype == "f32",
               f"out must be {x.shape[:-1] + (w.shape[0],)} f32", out=y)
    ws3 = tuple(ws) + (ws[0],) * (3 - len(ws))  # unused slots bind a real weight and output, with 0 rows
    outs3 = tuple(outs) + (outs[0],) * (3 - len(outs))
    wg = tuning.current().matvec_wg
    tpr = threads_per_row or matvec_tpr(sum(n), ws[0].shape[1], ws[0].dtype)
    kern = runtime().kernel("matvec", "multi", WG=wg, TPR=tpr, WTYPE=WTYPE[ws[0].dtype])
    kern(-(-sum(n) // (wg // tpr)), pack_params(n[0], ws[0].shape[1], 0, n[1], n[2], 0, 0, 0),
         x, ws3[0], outs3[0], ws3[1], ws3[2], outs3[1], outs3[2])
    return tuple(outs)


def matvec_multi_norm(h: Tensor, delta: Tensor | None, norm_w: Tensor, eps: float, ws: tuple[Tensor, ...],
                      outs: tuple[Tensor, ...], out_h: Tensor | None = None, out_x: Tensor | None = None,
                      threads_per_row: int | None = None) -> tuple[Tensor, ...]:
    """matvec_multi of x = rmsnorm(h + delta) * norm_w (delta None: rmsnorm(h)), x formed by every workgroup
    in its own memory, so the residual add and the norm cost no dispatch: outs[i] = ws[i] x, and out_h = h +
    delta (written by one workgroup; required with delta, and neither h nor delta). h, delta, norm_w: [K] or
    [1, K] f32 (norm_w [K]); the weights as matvec_multi's, 1 to 3 of them (`norm_multi_ok`). out_x: x
    itself too (one workgroup writes it), for other readers of x (a MoE block's experts after its router)."""
    expect("matvec_multi_norm", norm_multi_ok(h, ws), "weights must share a dtype and K, K % 8 == 0 (4 for f32), "
           "each within one binding, 1 to 3 of them, and K f32 values must fit the workgroup memory", h=h,
           **{f"w{i}": w for i, w in enumerate(ws)})
    k = h.numel
    expect("matvec_multi_norm", norm_w.shape == (k,) and norm_w.dtype == "f32", f"norm_w must be [{k}] f32", norm_w=norm_w)
    if delta is not None:
        expect("matvec_multi_norm", delta.shape == h.shape and delta.dtype == "f32", f"delta must be {h.shape} f32",
               delta=delta)
        expect("matvec_multi_norm", out_h is not None and out_h.shape == h.shape and out_h.dtype == "f32"
               and out_h.buffer is not h.buffer and out_h.buffer is not delta.buffer,
               f"out_h must be {h.shape} f32 and be neither h nor delta", out_h=out_h, h=h, delta=delta)
    if out_x is not None:
        expect("matvec_multi_norm", out_x.shape == h.shape and out_x.dtype == "f32" and out_x.buffer is not h.buffer
               and (delta is None or out_x.buffer is not delta.buffer), f"out_x must be {h.shape} f32, not h or delta",
               out_x=out_x)
    for w, y in zip(ws, outs):
        expect("matvec_multi_norm", y.shape == h.shape[:-1] + (w.shape[0],) and y.dtype == "f32",
               f"out must be {h.shape[:-1] + (w.shape[0],)} f32", out=y)
    n = [w.shape[0] for w in ws] + [0] * (3 - len(ws))
    ws3 = tuple(ws) + (ws[0],) * (3 - len(ws))
    outs3 = tuple(outs) + (outs[0],) * (3 - len(outs))
    wg = tuning.current().matvec_wg
    tpr = threads_per_row or matvec_tpr(sum(n), k, ws[0].dtype)
    kern = runtime().kernel("matvec", "multi_norm", WG=wg, TPR=tpr, WTYPE=WTYPE[ws[0].dtype], ND4=k // 4,
                            DELTA=int(delta is not None), KEEP_X=int(out_x is not None))
    # Unused bindings get stand-ins, never written: h for delta (read only), the first output for out_h, out_x.
    kern(-(-sum(n) // (wg // tpr)), pack_params(n[0], k, 0, n[1], n[2], float(eps), 0, 0),
         h, ws3[0], outs3[0], ws3[1], ws3[2], outs3[1], outs3[2], h if delta is None else delta, norm_w,
         out_h if delta is not None else outs3[0], outs3[0] if out_x is None else out_x)
    return tuple(outs)


def norm_multi_ok(h: Tensor, ws) -> bool:
    """Whether matvec_multi_norm takes h and these weights: multi_ok's conditions for 1 to 3 weights, and K
    f32 values within the adapter's workgroup memory beside the reduction's array."""
    gpu = runtime().gpu
    storage = gpu.limits["max-compute-workgroup-storage-size"] - 4 * tuning.current().matvec_wg
    return (1 <= len(ws) <= 3 and _same_x_ok(h, ws) and 4 * h.numel <= storage
            and gpu.limits.get("max-storage-buffers-per-shader-stage", 8) >= 11)


def multi_ok(x: Tensor, ws) -> bool:
    return 2 <= len(ws) <= 3 and _same_x_ok(x, ws)


def _same_x_ok(x: Tensor, ws) -> bool:
    """16-bit or f32 weights of one dtype and K = x's, K % 8 == 0 (4 for f32), each in one binding."""
    gpu = runtime().gpu
    first = ws[0]
    return (isinstance(first, Tensor) and x.dtype == "f32" and x.numel == first.shape[1]
            and all(isinstance(w, Tensor) and w.dtype == first.dtype and len(w.shape) == 2
                    and w.shape[1] == first.shape[1] and w.bind_size <= gpu.max_binding for w in ws)
            and first.dtype in WTYPE and first.shape[1] % (4 if first.dtype == "f32" else 8) == 0)


def matmul(x: Tensor, w: Tensor, out: Tensor | None = None) -> Tensor:
    """Y = X W^T. x: [M, K] f32; w: [N, K] f32/f16/bf16; returns [M, N] f32 (ops/tiles.py's tiled matmul)."""
    from .tiles import gathered_matmul, rows_in_order  # here: tiles imports this module

    dtype_in("matmul", "x", x, ("f32",))
    dtype_in("matmul", "w", w, WEIGHT_DTYPES)
    expect("matmul", len(x.shape) == 2 and len(w.shape) == 2 and x.shape[1] == w.shape[1],
           "x must be [M, K] and w [N, K]", x=x, w=w)
    (m, k), n = x.shape, w.shape[0]
    y = _out(out, (m, n), "matmul")
    if m:
        gathered_matmul(x, w, *rows_in_order(m), y, m, n, k)
    return y


def linear(x: Tensor, w: Tensor, out: Tensor | None = None) -> Tensor:
    """x [T, K] -> [T, N]: matvec for one token, matmul otherwise."""
    if x.shape[0] == 1:
        return matvec(x, w, out)
    return matmul(x, w, out)


def stored(w: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """float32 weights as uploaded in `dtype` (bf16 as uint16 bit patterns), and the float32 values the
    kernels read back from that storage: what a reference must multiply by."""
    w = np.asarray(w, np.float32)
    if dtype == "bf16":
        bits = bf16_bits(w)
        return bits, bf16_to_f32(bits)
    if dtype == "f16":
        return w.astype(np.float16), w.astype(np.float16).astype(np.float32)
    if dtype == "f32":
        return w, w
    raise ValueError(f"stored: no weight dtype {dtype!r} (one of {', '.join(WEIGHT_DTYPES)})")


def matvec_ref(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (w.astype(np.float64) @ x.astype(np.float64).reshape(-1)).astype(np.float32).reshape(x.shape[:-1] + (w.shape[0],))


def matmul_ref(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (x.astype(np.float64) @ w.astype(np.float64).T).astype(np.float32)


# -- registry cases (ops/registry.py) --------------------------------------------------------------

def random_weights(rng, n, k, dtype):
    """Random [n, k] weights as stored in `dtype` (for upload), and the float32 values the GPU sees."""
    return stored(rand(rng, n, k, scale=k ** -0.5), dtype)


# f32 sums of f32 products against float64: far inside the matmul bound on these sizes.
NMSE_BOUND = NMSE_MATMUL * 1e-3
MATVEC_SHAPES = [(1, 8), (7, 24), (33, 64), (257, 200), (130, 1031), (64, 4096), (3, 5)]
MATMUL_SHAPES = [(2, 3, 5), (17, 33, 31), (64, 64, 64), (70, 130, 129), (5, 300, 1024)]


def _matvec_case(rng, n, k, dtype, threads_per_row=None):
    rt = runtime()
    host_w, w_seen = random_weights(rng, n, k, dtype)
    x = rand(rng, k)
    out = padded_output((n,))
    matvec(rt.upload(x), rt.upload(host_w, dtype), out=out, threads_per_row=threads_per_row)
    return out.numpy(), matvec_ref(x, w_seen)


def _matmul_case(rng, m, n, k, dtype):
    rt = runtime()
    host_w, w_seen = random_weights(rng, n, k, dtype)
    x = rand(rng, m, k)
    out = padded_output((m, n))
    matmul(rt.upload(x), rt.upload(host_w, dtype), out=out)
    return out.numpy(), matmul_ref(x, w_seen)


def _matvec_swiglu_case(rng, n, k, dtype):
    from .elementwise import swiglu_ref

    rt = runtime()
    host_w, w_seen = random_weights(rng, n, k, dtype)
    gate, up = rand(rng, k) * 4, rand(rng, k)
    out = padded_output((n,))
    g, u = rt.upload(gate), rt.upload(up)
    require(swiglu_ok(g, u, rt.upload(host_w, dtype)), "swiglu_ok refuses weights that qualify")
    matvec_swiglu(g, u, rt.upload(host_w, dtype), out=out)
    return out.numpy(), matvec_ref(swiglu_ref(gate, up), w_seen)


def _matvec_multi_norm_case(rng, rows, dtype, k=200, delta=True, threads_per_row=None, keep_x=False):
    from .norm import rmsnorm_ref

    rt = runtime()
    hosts = [random_weights(rng, n, k, dtype) for n in rows]
    h, d, nw = rand(rng, k) * 3, rand(rng, k), rand(rng, k)
    outs = tuple(padded_output((n,)) for n in rows)
    ws = tuple(rt.upload(w, dtype) for w, _ in hosts)
    ht = rt.upload(h)
    require(norm_multi_ok(ht, ws), "norm_multi_ok refuses weights that qualify")
    out_h = padded_output((k,)) if delta else None
    out_x = padded_output((k,)) if keep_x else None
    matvec_multi_norm(ht, rt.upload(d) if delta else None, rt.upload(nw), 1e-6, ws, outs, out_h=out_h, out_x=out_x,
                      threads_per_row=threads_per_row)
    v = (h + d).astype(np.float32) if delta else h
    x = rmsnorm_ref(v[None], nw, 1e-6)[0]
    got = tuple(o.numpy() for o in outs) + ((out_h.numpy(),) if delta else ()) + ((out_x.numpy(),) if keep_x else ())
    return got, tuple(matvec_ref(x, seen) for _, seen in hosts) + ((v,) if delta else ()) + ((x,) if keep_x else ())


def _matvec_multi_case(rng, rows, dtype, threads_per_row):
    rt = runtime()
    k = 200
    hosts = [random_weights(rng, n, k, dtype) for n in rows]
    x = rand(rng, k)
    outs = tuple(padded_output((n,)) for n in rows)
    ws = tuple(rt.upload(h, dtype) for h, _ in hosts)
    require(multi_ok(rt.upload(x), ws), "multi_ok refuses weights that qualify")
    matvec_multi(rt.upload(x), ws, outs, threads_per_row=threads_per_row)
    return tuple(o.numpy() for o in outs), tuple(matvec_ref(x, seen) for _, seen in hosts)


def _split_binding_case(rng, n, k, m=None):
    """A bf16 weight over 128 MiB bound in row pieces (lavapipe's limit): matvec, or matmul of m rows."""
    rt = runtime()
    require(n * k * 2 > rt.gpu.max_binding, f"{n} x {k} bf16 fits one binding")
    w = rng.integers(0x3C00, 0x3D00, size=(n, k), dtype=np.uint16) ^ (rng.integers(0, 2, size=(n, k), dtype=np.uint16) << 15)
    wt = rt.upload(w, "bf16")
    require(len(wt.row_pieces(rt.gpu.max_binding, rt.gpu.offset_alignment)) > 1, "the weight is bound in one piece")
    if m is None:
        x = rand(rng, k)
        out = padded_output((n,))
        matvec(rt.upload(x), wt, out=out)
        return out.numpy(), matvec_ref(x, bf16_to_f32(w))
    x = rand(rng, m, k)
    out = padded_output((m, n))
    matmul(rt.upload(x), wt, out=out)
    return out.numpy(), matmul_ref(x, bf16_to_f32(w))


def cases():
    return [
        *sweep("linear", "matvec", NMSE_BOUND, _matvec_case,
               [dict(n=n, k=k, dtype=dt) for dt in WEIGHT_DTYPES for n, k in MATVEC_SHAPES],
               quick=[dict(n=257, k=200, dtype="bf16"), dict(n=130, k=1031, dtype="f16")]),
        # Rows not a multiple of rows per workgroup; K with a tail after the unrolled loop.
        *sweep("linear", "matvec", 1e-9, _matvec_case,
               [dict(n=37, k=1000, dtype=dt, threads_per_row=t) for dt in ("f32", "bf16") for t in (1, 8, 64, 256)]),
        *sweep("linear", "matmul", NMSE_BOUND, _matmul_case,
               [dict(m=m, n=n, k=k, dtype=dt) for dt in WEIGHT_DTYPES for m, n, k in MATMUL_SHAPES],
               quick=[dict(m=70, n=130, k=129, dtype="bf16")]),
        *sweep("linear", "matvec_swiglu", NMSE_BOUND, _matvec_swiglu_case,
               [dict(n=n, k=k, dtype=dt) for dt in WEIGHT_DTYPES for n, k in [(1, 8), (33, 64), (257, 200), (64, 4096), (5, 24)]],
               quick=[dict(n=257, k=200, dtype="bf16")]),
        *sweep("linear", "matvec_multi_norm", NMSE_BOUND, _matvec_multi_norm_case,
               [dict(rows=r, dtype=dt, delta=dl) for r in [(37, 5, 5), (64, 16), (300,)] for dt in WEIGHT_DTYPES
                for dl in (True, False)]
               + [dict(rows=(33, 8), dtype="bf16", k=2048, threads_per_row=t) for t in (4, 256)]
               + [dict(rows=(40, 9), dtype="bf16", k=3200)]  # K / 4 past two vec4 a thread
               + [dict(rows=(128,), dtype=dt, k=2048, delta=dl, keep_x=True) for dt in ("bf16", "f32") for dl in (True, False)],
               quick=[dict(rows=(37, 5, 5), dtype="bf16", delta=True)]),
        *sweep("linear", "matvec_multi", 1e-9, _matvec_multi_case,
               [dict(rows=r, dtype=dt, threads_per_row=t) for r in [(37, 5, 5), (64, 16), (1, 300, 7)]
                for dt in WEIGHT_DTYPES for t in (None, 4, 256)],
               quick=[dict(rows=(37, 5, 5), dtype="f32", threads_per_row=None)]),
        # 8200 x 8192 bf16 is 134 MB: more than one 128 MiB binding.
        *sweep("linear", "matvec", 1e-9, _split_binding_case, [dict(n=8200, k=8192)], large=True),
        *sweep("linear", "matmul", 1e-9, _split_binding_case, [dict(m=3, n=8200, k=8192)], large=True),
    ]
