"""Q8_0 linear layers: activations quantized on the GPU, int8 matvec through dot4I8Packed, a
dequantize-in-registers f32 matvec, the tiled matmul for prefill on either path, and a chooser between the
two matvecs.

Prefill (`q8_matmul`, ops/tiles.py) takes the tuning table's q8_prefill_path. "dot4": X quantized once per
matmul input by llama.cpp's q8_0 rule (quantize_activations; q8_linears shares one quantization among the
projections of an x, and a norm before them may make it, ops/norm.add_rmsnorm_q8), then int8 x int8 block
sums through dot4I8Packed in the tile (tiles_dot4.wgsl), as llama.cpp's mmq and our decode matvec do: the
activations round as decode's do. "f32": the weight dequantized into the shared tile and X kept in f32
(tiles_q8.wgsl): the error is that of the weights alone, and no int8 product is needed, which pays only
where the backend lowers dot4I8Packed to a hardware instruction (WGSL does not promise it).

Decode has both: `q8_matvec` (int8 x int8, activations quantized with llama.cpp's q8_0 rule) and
`q8_matvec_f32` (f32 activations, weights widened in registers). Which is faster depends on the adapter
(bandwidth-bound either way, but the f32 path's conversions can cost more than dot4's activation pass),
so `q8_linear(path='auto')` takes the tuning table's q8_matvec_path (gpu/tuning.py), and where that is
'auto' too, times both once per adapter on a representative shape and keeps dot4 unless f32 is clearly
faster (choose_path says why, and says its result once on stderr).

Decode is bound by dispatches more than by bytes (issue 16), so at one token the dot4 matvecs quantize x
in each workgroup's memory (fuses_quantization: K within the tuning table's q8_fuse_max_k and the adapter's
workgroup storage) with quantize_act's own code, instead of after a quantize_activations dispatch: the
same int8 values, one dispatch fewer. q8_matvec_multi takes 2-3 weights of one x (q/k/v, gate/up) in one
dispatch on either path, and q8_matvec_swiglu is a SwiGLU MLP's down projection reading gate and up, so no
swiglu dispatch runs before it. Past fuses_quantization the separate pass stays (one quantization shared
by the projections of an x in q8_linears).

Weights larger than a storage binding are bound in row pieces (Q8Weight.row_pieces), one dispatch per
piece, each writing its own output rows, as ops/linear.py does.
"""

from __future__ import annotations

import sys
import time
from functools import partial

import numpy as np
from tqdm import tqdm

from ..formats.q8_0 import QK, Q8Weight, quantize_q8_0, split_q8_0, upload_q8_0
from ..gpu import KernelError, Tensor, pack_params, runtime, tuning
from ._check import dtype_in, expect
from .linear import launch_tpr
from .registry import NMSE_MATMUL, nmse, padded_output, rand, require, sweep
from .tiles import gathered_matmul, rows_in_order

SHADER = "q8_0"
PATHS = ("dot4", "f32")
# Workgroup sizes, rows per workgroup, the timed shape and the margin are the tuning table's (q8_*).

_CHOICE: dict[tuple, dict] = {}  # (adapter, timed shape) -> choose_path's result


def _params(*values: int | float) -> bytes:
    # Every entry point reads the same 8-word params struct (a uniform must cover the whole struct).
    return pack_params(*values, *([0] * (8 - len(values))))


def _pieces(w: Q8Weight):
    gpu = runtime().gpu
    return w.row_pieces(gpu.max_binding, gpu.offset_alignment)


def _check_weight(kernel: str, w: Q8Weight) -> tuple[int, int]:
    if not isinstance(w, Q8Weight):
        raise KernelError(f"{kernel}: w must be a Q8Weight (formats.q8_0.upload_q8_0), got {type(w).__name__}")
    expect(kernel, len(w.shape) == 2, f"w must be [N, K], got shape {w.shape}")
    n, k = w.shape
    expect(kernel, k % QK == 0, f"K must be a multiple of {QK}, got w shape {w.shape}")
    expect(kernel, w.quants.shape == (n, k // 4) and w.quants.dtype == "u32",
           f"w.quants must be ({n}, {k // 4}) u32", quants=w.quants)
    expect(kernel, w.scales.shape == (n, k // QK) and w.scales.dtype == "f16",
           f"w.scales must be ({n}, {k // QK}) f16", scales=w.scales)
    return n, k


def _out(out: Tensor | None, shape, kernel: str) -> Tensor:
    if out is None:
        return runtime().empty(shape, "f32", label=kernel)
    expect(kernel, out.shape == tuple(shape) and out.dtype == "f32", f"out must be {tuple(shape)} f32", out=out)
    return out


def _check_vector(kernel: str, x: Tensor, k: int, w: Q8Weight) -> None:
    dtype_in(kernel, "x", x, ("f32",))
    expect(kernel, x.shape in ((k,), (1, k)), f"x must be [K] or [1, K] with K = {k} (w shape {w.shape})", x=x)


# ---- activations ----------------------------------------------------------------------------------------
def quantize_activations(x: Tensor, out: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """x [T, K] or [K] f32 -> (quants [T, K/4] u32 of int8 x4, scales [T, K/32] f32): llama.cpp's q8_0 rule
    per block of 32, d = max|x| / 127, q = roundf(x / d) (leading dims as x's)."""
    kernel = "q8_quantize_activations"
    dtype_in(kernel, "x", x, ("f32",))
    expect(kernel, len(x.shape) in (1, 2), "x must be [T, K] or [K]", x=x)
    k = x.shape[-1]
    expect(kernel, k % QK == 0, f"K must be a multiple of {QK} (ragged K has no Q8_0 blocks)", x=x)
    lead = x.shape[:-1]
    n_blocks = x.numel // QK
    if out is None:
        rt = runtime()
        out = (rt.empty(lead + (k // 4,), "u32", label=kernel), rt.empty(lead + (k // QK,), "f32", label=kernel))
    q, d = out
    expect(kernel, q.shape == lead + (k // 4,) and q.dtype == "u32", f"quants must be {lead + (k // 4,)} u32", quants=q)
    expect(kernel, d.shape == lead + (k // QK,) and d.dtype == "f32", f"scales must be {lead + (k // QK,)} f32", scales=d)
    wg = tuning.current().q8_quant_wg
    runtime().kernel(SHADER, "quantize_act", WG=wg)(-(-n_blocks // wg), _params(n_blocks), x, q, d)
    return q, d


# ---- quantizing x in workgroup memory -------------------------------------------------------------------
STAGED_BYTES_PER_BLOCK = 36  # a block of x in workgroup memory: 32 int8 quants and an f32 scale


def staged_blocks_max(wg: int) -> int:
    """The most blocks of x a workgroup of `wg` threads can quantize into its memory on this adapter: its
    workgroup storage less row_sum's array (4 bytes a thread), 36 bytes a block."""
    limit = runtime().gpu.limits["max-compute-workgroup-storage-size"]
    return max(0, (limit - 4 * wg) // STAGED_BYTES_PER_BLOCK)


def fuses_quantization(k: int, wg: int | None = None) -> bool:
    """Whether a decode matvec over K = `k` quantizes x in its own workgroups (no quantize_act dispatch):
    K within the tuning table's q8_fuse_max_k and within what the adapter's workgroup storage holds."""
    table = tuning.current()
    return k <= table.q8_fuse_max_k and k // QK <= staged_blocks_max(wg or table.q8_matvec_wg)


def staging(on: bool = True):
    """The tuning table with the fused entries on (K up to 16384, what the tables allow at most) or off,
    for the block: the registry cases check both paths whatever this adapter's table picks."""
    return tuning.override(q8_fuse_max_k=16384 if on else 0)


def _fused_kernel(entry: str, rows: int, k: int):
    """(kernel, rows per workgroup) of a fused entry for a launch of `rows` rows of K = `k`."""
    table = tuning.current()
    wg = table.q8_matvec_wg
    tpr = launch_tpr(rows, k // QK, table.q8_fused_min_tpr, wg)
    xb = k // QK if entry.endswith(("dot4", "dot4_x")) else 1  # the f32 entries hold no x in workgroup memory
    return runtime().kernel(SHADER, entry, WG=wg, TPR=tpr, XB=max(1, xb)), wg // tpr


# ---- decode ---------------------------------------------------------------------------------------------
def q8_matvec_quantized(xq: Tensor, xd: Tensor, w: Q8Weight, out: Tensor | None = None, vector_shape=None) -> Tensor:
    """y = W x from already-quantized activations (one quantize_activations may feed several matvecs).
    xq: [K/4] or [1, K/4] u32; xd: [K/32] or [1, K/32] f32; returns [N] (or `vector_shape[:-1] + (N,)`)."""
    kernel = "q8_matvec"
    n, k = _check_weight(kernel, w)
    dtype_in(kernel, "xq", xq, ("u32",))
    dtype_in(kernel, "xd", xd, ("f32",))
    expect(kernel, xq.numel == k // 4 and xd.numel == k // QK,
           f"activations must hold one row of K = {k} (w shape {w.shape})", xq=xq, xd=xd)
    lead = tuple(vector_shape[:-1]) if vector_shape is not None else xq.shape[:-1]
    y = _out(out, lead + (n,), kernel)
    table = tuning.current()
    kern = runtime().kernel(SHADER, "matvec_dot4", WG=table.q8_matvec_wg, ROWS=table.q8_matvec_rows)
    for row0, piece in _pieces(w):
        rows = piece.shape[0]
        kern(-(-rows // table.q8_matvec_rows), _params(rows, k, row0), xq, xd, piece.quants, piece.scales, y)
    return y


def q8_matvec(x: Tensor, w: Q8Weight, out: Tensor | None = None) -> Tensor:
    """y = W x with int8 activations (dot4I8Packed). x: [K] or [1, K] f32; returns [N] or [1, N] f32.
    One dispatch a row piece where fuses_quantization(K) (each workgroup quantizes x itself), otherwise
    quantize_activations then the matvec; the int8 values, and so the result, are the same."""
    n, k = _check_weight("q8_matvec", w)
    _check_vector("q8_matvec", x, k, w)
    if fuses_quantization(k):
        y = _out(out, x.shape[:-1] + (n,), "q8_matvec")
        for row0, piece in _pieces(w):
            rows = piece.shape[0]
            kern, per_group = _fused_kernel("matvec_dot4_x", rows, k)
            kern(-(-rows // per_group), _params(rows, k, row0), x, piece.quants, piece.scales, y)
        return y
    if out is not None:
        _out(out, x.shape[:-1] + (n,), "q8_matvec")
    rt = runtime()
    xq, xd = rt.scratch((k // 4,), "u32"), rt.scratch((k // QK,), "f32")
    quantize_activations(x.view((k,)), out=(xq, xd))
    y = q8_matvec_quantized(xq, xd, w, out, vector_shape=x.shape)
    # Later dispatches run after this one in queue order, so the scratch can be reused at once.
    xq.release()
    xd.release()
    return y


def q8_matvec_f32(x: Tensor, w: Q8Weight, out: Tensor | None = None) -> Tensor:
    """y = W x with f32 activations and weights widened in registers. x: [K] or [1, K] f32."""
    kernel = "q8_matvec_f32"
    n, k = _check_weight(kernel, w)
    _check_vector(kernel, x, k, w)
    y = _out(out, x.shape[:-1] + (n,), kernel)
    table = tuning.current()
    kern = runtime().kernel(SHADER, "matvec_f32", WG=table.q8_matvec_wg, ROWS=table.q8_matvec_rows)
    for row0, piece in _pieces(w):
        rows = piece.shape[0]
        kern(-(-rows // table.q8_matvec_rows), _params(rows, k, row0), x, piece.quants, piece.scales, y)
    return y


# ---- prefill --------------------------------------------------------------------------------------------
def q8_prefill_path() -> str:
    """The prefill matmul's path on this adapter (the tuning table's q8_prefill_path): 'dot4' or 'f32'."""
    return tuning.current().q8_prefill_path


def prefill_note() -> str:
    """What the Q8_0 prefill matmul does on the tuning table's q8_prefill_path, in words for the reports."""
    if q8_prefill_path() == "dot4":
        return ("activations rounded to int8 per block of 32 by llama.cpp's rule, int8 products, as decode's dot4 "
                "matvec: its error is the weights' and that rounding")
    return "weights widened in the tile, f32 activations: its error is the weights' alone"


def quantized_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """x [M, K] f32 -> quantize_activations(x) into scratch (xq [M, K/4] u32, xd [M, K/32] f32), which the
    caller releases (later dispatches run after the reader in queue order, so at once after it)."""
    rt = runtime()
    m, k = x.shape
    return quantize_activations(x, out=(rt.scratch((m, k // 4), "u32"), rt.scratch((m, k // QK), "f32")))


def _check_quantized(kernel: str, quantized: tuple[Tensor, Tensor], m: int, k: int) -> None:
    xq, xd = quantized
    expect(kernel, xq.dtype == "u32" and xq.numel == m * k // 4 and xd.dtype == "f32" and xd.numel == m * k // QK,
           f"quantized must be x's blocks: ([{m}, {k // 4}] u32, [{m}, {k // QK}] f32)", xq=xq, xd=xd)


def q8_matmul(x: Tensor, w: Q8Weight, out: Tensor | None = None,
              quantized: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Y = X W^T. x: [M, K] f32; w: Q8Weight [N, K]; returns [M, N] f32 (ops/tiles.py's tiled matmul) on the
    tuning table's q8_prefill_path: 'dot4' quantizes x (or reads `quantized`, x's quantize_activations
    blocks made already, e.g. shared by several projections of x) and takes int8 products; 'f32' widens
    the weights into the tile (and ignores `quantized`)."""
    kernel = "q8_matmul"
    n, k = _check_weight(kernel, w)
    dtype_in(kernel, "x", x, ("f32",))
    expect(kernel, len(x.shape) == 2 and x.shape[1] == k, f"x must be [M, K] with K = {k} (w shape {w.shape})", x=x)
    m = x.shape[0]
    y = _out(out, (m, n), kernel)
    if not m:
        return y
    if q8_prefill_path() == "f32":
        gathered_matmul(x, w, *rows_in_order(m), y, m, n, k)
        return y
    if quantized is not None:
        _check_quantized(kernel, quantized, m, k)
        gathered_matmul(quantized, w, *rows_in_order(m), y, m, n, k)
        return y
    xq = quantized_rows(x)
    gathered_matmul(xq, w, *rows_in_order(m), y, m, n, k)
    for t in xq:
        t.release()
    return y


# ---- choosing the decode path ---------------------------------------------------------------------------
def _adapter_key() -> tuple:
    gpu = runtime().gpu
    return (gpu.info.get("vendor", ""), gpu.info.get("device", ""), gpu.info.get("backend_type", ""), id(gpu.device))


def _time_dispatches(dispatches, reps: int, trials: int) -> float:
    """Seconds per repetition of `dispatches` (list of (kernel, params, tensors, groups)), best of
    `trials`, wall clock. Encoded and submitted here, not through rt.dispatch, so that a step the caller
    is recording stays untouched."""
    rt = runtime()
    device = rt.gpu.device
    encoded = [(k, k.bind_group(rt.params_buffer(params), tensors), groups) for k, params, tensors, groups in dispatches]

    def run(n: int) -> float:
        enc = device.create_command_encoder()
        cp = enc.begin_compute_pass()
        for _ in range(n):
            for k, bg, groups in encoded:
                cp.set_pipeline(k.pipeline)
                cp.set_bind_group(0, bg)
                cp.dispatch_workgroups(*groups)
        cp.end()
        t0 = time.perf_counter()
        device.queue.submit([enc.finish()])
        rt.sync()
        return time.perf_counter() - t0

    run(1)  # warm-up: first use of the pipelines and buffers
    return min(run(reps) for _ in range(trials)) / reps


def choose_path(reps: int = 4, trials: int = 3) -> dict:
    """Time both decode paths on the tuning table's q8_choice_shape once per adapter, remember the choice
    and say it (one line on stderr). Returns {"path", "seconds": {"dot4": s, "f32": s}, "shape", "clock"}."""
    table = tuning.current()
    n, k = table.q8_choice_shape
    key = _adapter_key() + ((n, k),)
    if key in _CHOICE:
        return _CHOICE[key]
    rt = runtime()
    rng = np.random.default_rng(0)
    w = Q8Weight((n, k), rt.upload(rng.integers(0, 2**32, size=(n, k // 4), dtype=np.uint32), "u32"),
                 rt.upload((rng.standard_normal((n, k // QK)) * 1e-3).astype(np.float16), "f16"))
    x = rt.upload(rng.standard_normal(k).astype(np.float32))
    xq, xd, y = rt.empty((k // 4,), "u32"), rt.empty((k // QK,), "f32"), rt.empty((n,), "f32")
    wg, rows = table.q8_matvec_wg, table.q8_matvec_rows
    quant = rt.kernel(SHADER, "quantize_act", WG=table.q8_quant_wg)
    dot4 = rt.kernel(SHADER, "matvec_dot4", WG=wg, ROWS=rows)
    f32 = rt.kernel(SHADER, "matvec_f32", WG=wg, ROWS=rows)
    grid = (-(-n // rows), 1, 1)
    if fuses_quantization(k):  # the one dispatch that decode runs for this K
        dot4_x, per_group = _fused_kernel("matvec_dot4_x", n, k)
        dot4_run = [(dot4_x, _params(n, k, 0), (x, w.quants, w.scales, y), (-(-n // per_group), 1, 1))]
    else:
        dot4_run = [(quant, _params(k // QK), (x, xq, xd), (-(-(k // QK) // table.q8_quant_wg), 1, 1)),
                    (dot4, _params(n, k, 0), (xq, xd, w.quants, w.scales, y), grid)]
    seconds = {
        "dot4": _time_dispatches(dot4_run, reps, trials),
        "f32": _time_dispatches([(f32, _params(n, k, 0), (x, w.quants, w.scales, y), grid)], reps, trials),
    }
    # dot4 unless f32 takes under q8_f32_margin of its time: one quantization of x feeds every projection
    # of it on the dot4 path (q8_linears), which this single matvec does not show (tuning.py has the H200
    # figures), while an adapter that emulates dot4I8Packed is several times slower.
    path = "f32" if seconds["f32"] < table.q8_f32_margin * seconds["dot4"] else "dot4"
    choice = {"path": path, "seconds": seconds, "shape": (n, k), "clock": "wall-clock"}
    _CHOICE[key] = choice
    gpu = rt.gpu
    # Once per adapter, so a user sees why decode took the path it took and how to fix it; tqdm.write keeps
    # a progress bar that is on screen intact.
    tqdm.write(f"omni_lab: Q8_0 decode matvec on {gpu.info.get('device', '?')} ({gpu.info.get('backend_type', '?')}): "
               f"dot4 {seconds['dot4'] * 1e3:.3f} ms, f32 {seconds['f32'] * 1e3:.3f} ms for {n} x {k} (wall clock) "
               f"-> {path}; set tuning q8_matvec_path (omni-lab generate --q8-path) to skip this measurement",
               file=sys.stderr)
    return choice


def q8_decode_path() -> str:
    """The decode matvec path q8_linear takes on this adapter: 'dot4' or 'f32'."""
    return _decode_path("auto")


def _decode_path(path: str) -> str:
    """'dot4' or 'f32' for `path`: 'auto' is the tuning table's q8_matvec_path, measured if that is 'auto'."""
    if path == "auto":
        path = tuning.current().q8_matvec_path
    return choose_path()["path"] if path == "auto" else path


def q8_linear(x: Tensor, w: Q8Weight, out: Tensor | None = None, path: str = "auto") -> Tensor:
    """x [T, K] (or [K]) -> [T, N]. One token: the decode matvec `path` ('dot4', 'f32', or 'auto' = the
    tuning table's q8_matvec_path, where 'auto' is the one measured faster on this adapter); several
    tokens: q8_matmul."""
    if path not in PATHS + ("auto",):
        raise KernelError(f"q8_linear: path must be 'auto', 'dot4' or 'f32', got {path!r}")
    if len(x.shape) == 2 and x.shape[0] > 1:
        return q8_matmul(x, w, out)
    return q8_matvec(x, w, out) if _decode_path(path) == "dot4" else q8_matvec_f32(x, w, out)


def q8_multi_ok(x: Tensor, ws, path: str = "dot4") -> bool:
    """Whether q8_matvec_multi takes these weights on decode path `path`: 2 or 3 Q8Weights of x's K, each
    within one binding, the adapter binding 10 storage buffers to a shader, and on dot4 a K whose
    quantization fits the workgroups (fuses_quantization)."""
    gpu = runtime().gpu
    if not (2 <= len(ws) <= 3 and all(isinstance(w, Q8Weight) and len(w.shape) == 2 for w in ws)):
        return False
    k = ws[0].shape[1]
    return (x.dtype == "f32" and x.numel == k and k % QK == 0 and all(w.shape[1] == k for w in ws)
            and all(t.bind_size <= gpu.max_binding for w in ws for t in (w.quants, w.scales))
            and gpu.limits.get("max-storage-buffers-per-shader-stage", 8) >= 10
            and (path == "f32" or fuses_quantization(k)))


def q8_matvec_multi(x: Tensor, ws: tuple, outs: tuple, path: str = "auto") -> tuple[Tensor, ...]:
    """Two or three Q8_0 matvecs of the same x ([K] or [1, K] f32) in one dispatch: outs[i] = ws[i] x
    (q/k/v, gate/up at decode), as ops/linear.py's matvec_multi for 16-bit weights. path 'dot4' (x
    quantized in each workgroup's memory: the results of q8_matvec), 'f32' (those of q8_matvec_f32) or
    'auto' (q8_linear's choice). q8_multi_ok says whether a set qualifies."""
    path = _decode_path(path)
    kernel = "q8_matvec_multi"
    expect(kernel, q8_multi_ok(x, ws, path), "weights must be 2 or 3 Q8Weights of x's K, each within one binding, "
           "on an adapter with 10 storage buffers a shader (dot4: K within q8_fuse_max_k and workgroup storage)",
           x=x, **{f"w{i}": w.quants for i, w in enumerate(ws) if isinstance(w, Q8Weight)})
    for w, y in zip(ws, outs):
        _check_weight(kernel, w)
        _out(y, x.shape[:-1] + (w.shape[0],), kernel)
    k = ws[0].shape[1]
    n = [w.shape[0] for w in ws] + [0] * (3 - len(ws))
    ws3 = tuple(ws) + (ws[0],) * (3 - len(ws))  # unused slots bind a real weight and output, with 0 rows
    outs3 = tuple(outs) + (outs[0],) * (3 - len(outs))
    kern, per_group = _fused_kernel("multi_" + path, sum(n), k)
    tensors = [x]
    for w, y in zip(ws3, outs3):
        tensors += [w.quants, w.scales, y]
    kern(-(-sum(n) // per_group), _params(n[0], k, 0, n[1], n[2]), *tensors)
    return tuple(outs)


def q8_matvec_multi_norm(h: Tensor, delta: Tensor | None, norm_w: Tensor, eps: float, ws: tuple, outs: tuple,
                         out_h: Tensor | None = None) -> tuple[Tensor, ...]:
    """q8_matvec_multi on the dot4 path of x = rmsnorm(h + delta) * norm_w (delta None: rmsnorm(h)), which
    each workgroup forms and quantizes in its memory, so the residual add and the norm cost no dispatch;
    out_h = h + delta (required with delta; neither h nor delta). As ops/linear.py's matvec_multi_norm for
    16-bit weights; q8_norm_multi_ok says whether a set qualifies."""
    kernel = "q8_matvec_multi_norm"
    expect(kernel, q8_norm_multi_ok(h, ws), "weights must be 2 or 3 Q8Weights of h's K, each within one binding, "
           "K within q8_fuse_max_k and workgroup storage, on an adapter with 13 storage buffers a shader", h=h)
    k = ws[0].shape[1]
    expect(kernel, norm_w.shape == (k,) and norm_w.dtype == "f32", f"norm_w must be [{k}] f32", norm_w=norm_w)
    if delta is not None:
        expect(kernel, delta.shape == h.shape and delta.dtype == "f32", f"delta must be {h.shape} f32", delta=delta)
        expect(kernel, out_h is not None and out_h.shape == h.shape and out_h.dtype == "f32"
               and out_h.buffer is not h.buffer and out_h.buffer is not delta.buffer,
               f"out_h must be {h.shape} f32 and be neither h nor delta", out_h=out_h, h=h, delta=delta)
    for w, y in zip(ws, outs):
        _check_weight(kernel, w)
        _out(y, h.shape[:-1] + (w.shape[0],), kernel)
    n = [w.shape[0] for w in ws] + [0] * (3 - len(ws))
    ws3 = tuple(ws) + (ws[0],) * (3 - len(ws))
    outs3 = tuple(outs) + (outs[0],) * (3 - len(outs))
    table = tuning.current()
    tpr = launch_tpr(sum(n), k // QK, table.q8_fused_min_tpr, table.q8_matvec_wg)
    kern = runtime().kernel(SHADER, "multi_dot4_norm", WG=table.q8_matvec_wg, TPR=tpr, XB=k // QK,
                            DELTA=int(delta is not None))
    tensors = [h]
    for w, y in zip(ws3, outs3):
        tensors += [w.quants, w.scales, y]
    # Without delta, h stands in for the unused delta and out_h bindings (never written).
    tensors += [h if delta is None else delta, norm_w, outs3[0] if delta is None else out_h]
    kern(-(-sum(n) // (table.q8_matvec_wg // tpr)), _params(n[0], k, 0, n[1], n[2], float(eps)), *tensors)
    return tuple(outs)


def q8_norm_multi_ok(h: Tensor, ws) -> bool:
    """q8_multi_ok on the dot4 path, with the 13 storage bindings of multi_dot4_norm."""
    return (q8_multi_ok(h, ws, "dot4")
            and runtime().gpu.limits.get("max-storage-buffers-per-shader-stage", 8) >= 13)


def q8_matvec_swiglu(gate: Tensor, up: Tensor, w: Q8Weight, out: Tensor | None = None, path: str = "auto") -> Tensor:
    """y = W (silu(gate) * up) at decode: a SwiGLU MLP's down projection reading its gate and up halves, so
    that no swiglu dispatch runs before it. gate, up: [F] or [1, F] f32 (the same shape); w: Q8Weight
    [N, F]; returns [N] or [1, N] f32 (the leading dims of gate). silu(g) * up is elementwise.swiglu's f32
    value, bit for bit. path 'dot4': the product quantized in each workgroup's memory, so the result is
    q8_matvec(swiglu(gate, up)) exactly; past fuses_quantization(F) it runs as those two ops (three
    dispatches). 'f32': the product formed in registers (q8_matvec_f32's math). 'auto': q8_linear's
    choice. One dispatch a row piece otherwise."""
    kernel = "q8_matvec_swiglu"
    n, k = _check_weight(kernel, w)
    for name, t in (("gate", gate), ("up", up)):
        dtype_in(kernel, name, t, ("f32",))
    expect(kernel, gate.shape in ((k,), (1, k)) and up.shape == gate.shape,
           f"gate and up must be [F] or [1, F] (the same) with F = {k} (w shape {w.shape})", gate=gate, up=up)
    path = _decode_path(path)
    if path == "dot4" and not fuses_quantization(k):
        from .elementwise import swiglu

        rt = runtime()
        act = rt.scratch(gate.shape, "f32")
        y = q8_matvec(swiglu(gate, up, out=act), w, out)
        act.release()  # later dispatches run after these in queue order
        return y
    y = _out(out, gate.shape[:-1] + (n,), kernel)
    for row0, piece in _pieces(w):
        rows = piece.shape[0]
        kern, per_group = _fused_kernel("swiglu_" + path, rows, k)
        kern(-(-rows // per_group), _params(rows, k, row0), gate, up, piece.quants, piece.scales, y)
    return y


def q8_linears(x: Tensor, ws: tuple, outs: tuple, path: str = "auto",
               quantized: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, ...]:
    """Several Q8_0 projections of the same x (q/k/v, gate/up). At one token: one q8_matvec_multi dispatch
    where q8_multi_ok; otherwise, on the dot4 path, one matvec each, quantizing x in their workgroups where
    K allows, or else one quantization of x shared by all of them: a decode step is bound by dispatches
    more than by bytes. Several tokens: q8_matmul per weight, on the dot4 prefill path all reading one
    quantization of x (`quantized`, where the caller made it, e.g. with the norm before)."""
    one = len(x.shape) == 1 or x.shape[0] == 1
    if not one:
        if q8_prefill_path() != "dot4" or quantized is not None or len(x.shape) != 2 or not x.shape[0]:
            return tuple(q8_matmul(x, w, out, quantized=quantized) for w, out in zip(ws, outs))
        dtype_in("q8_linears", "x", x, ("f32",))
        expect("q8_linears", x.shape[1] % QK == 0, f"K must be a multiple of {QK}", x=x)
        xq = quantized_rows(x)
        ys = tuple(q8_matmul(x, w, out, quantized=xq) for w, out in zip(ws, outs))
        for t in xq:
            t.release()
        return ys
    if one and q8_multi_ok(x, ws, _decode_path(path)):
        return q8_matvec_multi(x, ws, outs, path)
    if not (one and _decode_path(path) == "dot4") or fuses_quantization(x.shape[-1]):
        return tuple(q8_linear(x, w, out, path) for w, out in zip(ws, outs))
    k = x.shape[-1]
    for w in ws:
        _check_weight("q8_linears", w)
        _check_vector("q8_linears", x, k, w)
    rt = runtime()
    xq, xd = rt.scratch((k // 4,), "u32"), rt.scratch((k // QK,), "f32")
    quantize_activations(x.view((k,)), out=(xq, xd))
    if q8_multi_quantized_ok(x, ws):
        ys = q8_matvec_multi_quantized(xq, xd, ws, outs)
    else:
        ys = tuple(q8_matvec_quantized(xq, xd, w, out, vector_shape=x.shape) for w, out in zip(ws, outs))
    xq.release()
    xd.release()
    return ys


def q8_multi_quantized_ok(x: Tensor, ws) -> bool:
    """Whether q8_matvec_multi_quantized takes these weights: q8_multi_ok's (on "f32": x is quantized already,
    nothing is staged), with its 11 storage bindings."""
    return q8_multi_ok(x, ws, "f32") and runtime().gpu.limits.get("max-storage-buffers-per-shader-stage", 8) >= 11


def q8_matvec_multi_quantized(xq: Tensor, xd: Tensor, ws: tuple, outs: tuple) -> tuple[Tensor, ...]:
    """q8_matvec_multi from an x quantize_activations already quantized (xq [K/4] u32, xd [K/32] f32): 2 or
    3 Q8Weights in one dispatch, each result q8_matvec_quantized's."""
    k = ws[0].shape[1]
    kernel = "q8_matvec_multi_quantized"
    expect(kernel, xq.shape == (k // 4,) and xd.shape == (k // QK,), f"xq must be [{k // 4}] u32 and xd [{k // QK}] f32",
           xq=xq, xd=xd)
    for w, y in zip(ws, outs):
        _check_weight(kernel, w)
        expect(kernel, w.shape[1] == k and y.numel == w.shape[0] and y.dtype == "f32", f"out must be [{w.shape[0]}] f32",
               out=y)
    n = [w.shape[0] for w in ws] + [0] * (3 - len(ws))
    ws3 = tuple(ws) + (ws[0],) * (3 - len(ws))
    outs3 = tuple(outs) + (outs[0],) * (3 - len(outs))
    table = tuning.current()
    tpr = launch_tpr(sum(n), k // QK, table.q8_matvec_wg // table.q8_matvec_rows, table.q8_matvec_wg)
    kern = runtime().kernel(SHADER, "multi_dot4_q", WG=table.q8_matvec_wg, TPR=tpr, XB=1)
    tensors = [xq]
    for w, y in zip(ws3, outs3):
        tensors += [w.quants, w.scales, y]
    kern(-(-sum(n) // (table.q8_matvec_wg // tpr)), _params(n[0], k, 0, n[1], n[2]), *tensors, xd)
    return tuple(outs)


# ---- numpy references -----------------------------------------------------------------------------------
def _roundf(v: np.ndarray) -> np.ndarray:
    a = np.abs(v)
    f = np.floor(a)
    return np.sign(v) * (f + np.floor(2 * (a - f)))


def quantize_activations_ref(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x [..., K] -> (q int8 [..., K], d float32 [..., K/32]), in float32 as llama.cpp's quantize_row_q8_0
    computes it (but with the scale kept in f32, as our GPU activations keep it)."""
    x = np.asarray(x, dtype=np.float32)
    blocks = x.reshape(-1, QK)  # [n_blocks, 32]
    d = np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    q = _roundf(blocks * inv).astype(np.int8)
    return q.reshape(x.shape), d.reshape(x.shape[:-1] + (x.shape[-1] // QK,))


def q8_dot4_ref(x: np.ndarray, wq: np.ndarray, wd: np.ndarray) -> np.ndarray:
    """The dot4 path, decode's matvec and prefill's matmul alike: x [..., K] quantized as
    quantize_activations_ref, each block's 32 int8 x int8 products summed exactly (the GPU's i32 sums are
    exact within a block: |sum| <= 32 * 127^2), each block sum times (x's f32 scale * the weight's f16 scale)
    in f32 as the GPU forms it, summed over the blocks in float64 (the GPU in f32). wq int8 [N, K], wd
    [N, K/32] (float16 scales as stored); returns [..., N] float32."""
    x = np.asarray(x, np.float32)
    xq, xd = quantize_activations_ref(x)
    n, k = wq.shape
    xb = xq.reshape(-1, k // QK, QK).astype(np.float64)  # [M, B, 32]: int8 values, exact in float64
    wb = wq.reshape(n, k // QK, QK).astype(np.float64)
    xs = xd.reshape(-1, k // QK).astype(np.float32)      # [M, B]
    ws = wd.astype(np.float32)                           # [N, B]
    y = np.zeros((xb.shape[0], n))
    for b in range(k // QK):  # per block: integer sums below 2^53, so the float64 matmul is exact
        sums = xb[:, b] @ wb[:, b].T  # [M, N]
        y += sums * (xs[:, b, None] * ws[None, :, b]).astype(np.float64)
    return y.astype(np.float32).reshape(x.shape[:-1] + (n,))


def q8_matvec_ref(x: np.ndarray, wq: np.ndarray, wd: np.ndarray) -> np.ndarray:
    """The dot4 decode path (q8_dot4_ref): x [K] or [1, K]."""
    return q8_dot4_ref(x, wq, wd)


def dequantize_ref(wq: np.ndarray, wd: np.ndarray) -> np.ndarray:
    """int8 [N, K] and scales [N, K/32] -> float64 [N, K]."""
    n, k = wq.shape
    return (wq.reshape(n, k // QK, QK).astype(np.float64) * wd.astype(np.float64)[..., None]).reshape(n, k)


def q8_matvec_f32_ref(x: np.ndarray, wq: np.ndarray, wd: np.ndarray) -> np.ndarray:
    """y = dequant(W) x in float64 (the f32 path's math, exactly)."""
    y = dequantize_ref(wq, wd) @ np.asarray(x, np.float64).reshape(-1)
    return y.astype(np.float32).reshape(np.shape(x)[:-1] + (wq.shape[0],))


def q8_matmul_ref(x: np.ndarray, wq: np.ndarray, wd: np.ndarray, path: str = "dot4") -> np.ndarray:
    """x [M, K] -> [M, N] on prefill path `path`: 'dot4' (q8_dot4_ref: int8 activations) or 'f32' (x times
    the dequantized weights in float64)."""
    if path == "dot4":
        return q8_dot4_ref(x, wq, wd)
    return (np.asarray(x, np.float64) @ dequantize_ref(wq, wd).T).astype(np.float32)


def q8_matvec_multi_ref(x: np.ndarray, weights, path: str = "dot4") -> tuple[np.ndarray, ...]:
    """Each (wq, wd) of `weights` applied to x by the single-weight reference of `path`."""
    ref = q8_matvec_ref if path == "dot4" else q8_matvec_f32_ref
    return tuple(ref(x, wq, wd) for wq, wd in weights)


def q8_matvec_swiglu_ref(act: np.ndarray, wq: np.ndarray, wd: np.ndarray, path: str = "dot4") -> np.ndarray:
    """W act with act = silu(gate) * up as f32 values (elementwise.swiglu's on the GPU, or swiglu_ref):
    the single-weight reference of `path`."""
    return (q8_matvec_ref if path == "dot4" else q8_matvec_f32_ref)(act, wq, wd)


# -- registry cases (ops/registry.py) --------------------------------------------------------------

# The GPU computes exact int32 block sums; what remains is f32 rounding of the block scaling and of the
# accumulation over at most K/32 blocks, and, for dot4, an occasional +-1 activation quant where the
# GPU's 1/d differs from numpy's in the last ulp (WGSL allows 2.5 ulp division). Observed ~1e-14.
NMSE_Q8_EXACT = 5e-10
# dot4 against the float product of the same (dequantized) weights: rounding x to 8 bits per block adds
# uniform error of variance d^2/12 with d = max|x|/127. For Gaussian x, max over 32 values ~ 2.3 sigma,
# so NMSE ~ (2.3/127)^2 / 12 ~ 2.7e-5. 5e-4 (the matmul-like bound) leaves a margin of ~18x.
NMSE_DOT4_VS_F32 = NMSE_MATMUL
MATVEC_SHAPES = [(1, 32), (7, 64), (33, 96), (130, 2048), (257, 1056), (64, 4096), (3, 160), (9, 2080), (5, 8224)]
MATMUL_SHAPES = [(2, 3, 32), (17, 33, 96), (33, 64, 64), (70, 130, 1056), (5, 300, 1024), (64, 64, 2048)]


def random_q8_weights(rng, n, k):
    """A random weight quantized by gguf's rule: (Q8Weight on the GPU, int8 quants, f16 scales)."""
    blocks = quantize_q8_0(rand(rng, n, k, scale=k ** -0.5))
    wq, wd = split_q8_0(blocks, (n, k))
    return upload_q8_0(blocks, (n, k)), wq, wd


def _q8_matvec_case(rng, n, k, fused=True):
    """fused: x quantized in the matvec's workgroups (matvec_dot4_x); False: the separate pass that K past
    fuses_quantization takes (quantize_act, matvec_dot4)."""
    w, wq, wd = random_q8_weights(rng, n, k)
    x = rand(rng, k)
    out = padded_output((n,))
    with staging(fused):
        require(fuses_quantization(k) == fused, f"K = {k} {'does not fuse' if fused else 'fuses'} on this adapter")
        q8_matvec(runtime().upload(x), w, out=out)
    y = out.numpy()
    if n >= 32:  # the statistical bound needs enough outputs to mean anything
        err = nmse(y, q8_matvec_f32_ref(x, wq, wd))
        require(err < NMSE_DOT4_VS_F32, f"dot4 against the f32 product: NMSE {err:.3g} over {NMSE_DOT4_VS_F32:g}")
    return y, q8_matvec_ref(x, wq, wd)


def _q8_matvec_f32_case(rng, n, k):
    w, wq, wd = random_q8_weights(rng, n, k)
    x = rand(rng, k)
    out = padded_output((1, n))
    q8_matvec_f32(runtime().upload(x[None]), w, out=out)
    return out.numpy()[0], q8_matvec_f32_ref(x, wq, wd)


def rounding_rows(rng, m: int, k: int) -> np.ndarray:
    """[M, K] f32 rows whose int8 rounding matters: in every block one value 40 times the others, so that
    most round to a few levels or to zero (dot4 then far from the f32 product), and every fourth block on
    exact halves of its scale (d = 1/8: x / d = j + 1/2, which q8_0 rounds away from zero)."""
    x = rand(rng, m, k)
    blocks = x.reshape(m, k // QK, QK)
    blocks[:, :, 0] = np.where(blocks[:, :, 0] < 0, -40.0, 40.0)
    halves = (rng.integers(-127, 127, size=blocks[:, ::4].shape) + 0.5) / 8
    halves[..., 0] = 127 / 8  # max |x| = 127 d
    blocks[:, ::4] = halves
    return x


def _q8_matmul_case(rng, m, n, k, path="dot4", rounding=False):
    """path: the tuning table's q8_prefill_path for the call. dot4 is also held to the f32 product of the
    same weights by the statistical bound (NMSE_DOT4_VS_F32), except on rounding rows (rounding_rows),
    where it must be far from it: the int8 rounding is really there, and it is the reference's."""
    w, wq, wd = random_q8_weights(rng, n, k)
    x = rounding_rows(rng, m, k) if rounding else rand(rng, m, k)
    out = padded_output((m, n))
    with tuning.override(q8_prefill_path=path):
        q8_matmul(runtime().upload(x), w, out=out)
    y = out.numpy()
    if path == "dot4" and m * n >= 64:
        err = nmse(y, q8_matmul_ref(x, wq, wd, "f32"))
        if rounding:
            require(err > 100 * NMSE_Q8_EXACT, f"dot4 on rounding rows within NMSE {err:.3g} of the f32 product")
        else:
            require(err < NMSE_DOT4_VS_F32, f"dot4 against the f32 product: NMSE {err:.3g} over {NMSE_DOT4_VS_F32:g}")
    return y, q8_matmul_ref(x, wq, wd, path)


def _q8_linears_prefill_case(rng, rows, m, k, path):
    """Several projections of one x at prefill: on dot4 one quantize_act shared by their matmuls."""
    rt = runtime()
    made = [random_q8_weights(rng, n, k) for n in rows]
    x = rand(rng, m, k)
    outs = tuple(padded_output((m, n)) for n in rows)
    # no split-K here (its split_sum passes would join the list; tiles' own cases check it)
    with tuning.override(q8_prefill_path=path, matmul_split_below=0), rt.profile() as prof:
        q8_linears(rt.upload(x), tuple(w for w, _, _ in made), outs)
    kernels = [t.kernel.split("[")[0] for t in prof.timings]
    want = ["q8_0.quantize_act"] + ["tiles_dot4.main"] * len(rows) if path == "dot4" else ["tiles_q8.main"] * len(rows)
    require(kernels == want, f"q8_linears at prefill ran {kernels}, not {want}")
    return tuple(o.numpy() for o in outs), tuple(q8_matmul_ref(x, wq, wd, path) for _, wq, wd in made)


def _q8_multi_case(rng, rows, k, path):
    rt = runtime()
    made = [random_q8_weights(rng, n, k) for n in rows]
    x = rand(rng, 1, k)
    outs = tuple(padded_output((1, n)) for n in rows)
    ws = tuple(w for w, _, _ in made)
    with staging():
        require(q8_multi_ok(rt.upload(x), ws, path), "q8_multi_ok refuses weights that qualify")
        q8_matvec_multi(rt.upload(x), ws, outs, path=path)
    return tuple(o.numpy() for o in outs), q8_matvec_multi_ref(x, [(wq, wd) for _, wq, wd in made], path)


def _q8_multi_quantized_case(rng, rows, k):
    """The separate pass's multi (q8_linears where the table keeps quantize_act): exact."""
    rt = runtime()
    made = [random_q8_weights(rng, n, k) for n in rows]
    x = rand(rng, 1, k)
    outs = tuple(padded_output((1, n)) for n in rows)
    with staging(False), rt.profile() as prof:
        q8_linears(rt.upload(x), tuple(w for w, _, _ in made), outs, path="dot4")
    require([t.kernel.split("[")[0] for t in prof.timings] == ["q8_0.quantize_act", "q8_0.multi_dot4_q"],
            "q8_linears past the fused K must quantize once and take one multi dispatch")
    return tuple(o.numpy() for o in outs), q8_matvec_multi_ref(x, [(wq, wd) for _, wq, wd in made], "dot4")


def _q8_multi_norm_case(rng, rows, k, delta=True):
    """Against the dot4 reference of numpy's normed x, which is a rounding apart from the GPU's (an int8
    value may move by one: dot4's bound against the f32 product, over rows enough for a statistical bound);
    h + delta exactly."""
    from .norm import rmsnorm_ref

    rt = runtime()
    made = [random_q8_weights(rng, n, k) for n in rows]
    h, d, nw = rand(rng, 1, k) * 3, rand(rng, 1, k), rand(rng, k)
    outs = tuple(padded_output((1, n)) for n in rows)
    ws = tuple(w for w, _, _ in made)
    ht = rt.upload(h)
    out_h = padded_output((1, k)) if delta else None
    with staging():
        require(q8_norm_multi_ok(ht, ws), "q8_norm_multi_ok refuses weights that qualify")
        q8_matvec_multi_norm(ht, rt.upload(d) if delta else None, rt.upload(nw), 1e-6, ws, outs, out_h=out_h)
    v = (h + d).astype(np.float32) if delta else h
    if delta:
        require(np.array_equal(out_h.numpy(), v), "out_h must be h + delta")
    x = rmsnorm_ref(v, nw, 1e-6)
    return tuple(o.numpy() for o in outs), q8_matvec_multi_ref(x, [(wq, wd) for _, wq, wd in made], "dot4")


def _q8_swiglu_case(rng, n, k, path, fused=True):
    """Against the single-weight reference of the GPU's own swiglu product (elementwise.swiglu): dot4's
    int8 values then match exactly, where numpy's silu may differ from ours in the last ulp. The numpy
    product is checked too, by the dot4-against-f32 bound."""
    from .elementwise import swiglu, swiglu_ref

    rt = runtime()
    w, wq, wd = random_q8_weights(rng, n, k)
    gate, up = rand(rng, 1, k, scale=3.0), rand(rng, 1, k)
    act = swiglu(rt.upload(gate), rt.upload(up)).numpy()
    out = padded_output((1, n))
    with staging(fused):
        require(fuses_quantization(k) == fused, f"K = {k} {'does not fuse' if fused else 'fuses'} on this adapter")
        q8_matvec_swiglu(rt.upload(gate), rt.upload(up), w, out=out, path=path)
    y = out.numpy()
    if n >= 32:
        err = nmse(y, q8_matvec_f32_ref(swiglu_ref(gate, up), wq, wd))
        require(err < NMSE_DOT4_VS_F32, f"against the numpy SwiGLU's f32 product: NMSE {err:.3g} over {NMSE_DOT4_VS_F32:g}")
    return y, q8_matvec_swiglu_ref(act, wq, wd, path)


def _split_binding_case(rng, n, k, op, path="dot4"):
    """int8 quants of 134 MB need two bindings on lavapipe: rows on both sides of each split."""
    rt = runtime()
    require(n * k > rt.gpu.max_binding, f"{n} x {k} int8 fits one binding")
    wq = rng.integers(-127, 128, size=(n, k), dtype=np.int8)
    wd = (rng.uniform(0.5, 1.5, size=(n, k // QK)) * 1e-3).astype(np.float16)
    w = Q8Weight((n, k), rt.upload(wq.view(np.uint32), "u32"), rt.upload(wd, "f16"))
    pieces = w.row_pieces(rt.gpu.max_binding, rt.gpu.offset_alignment)
    require(len(pieces) > 1, "the weight is bound in one piece")
    rows = sorted({r + d for r, _ in pieces for d in (-2, -1, 0, 1) if 0 <= r + d < n} | {n - 1, n // 3})
    sub_q, sub_d = wq[rows], wd[rows]
    if op == "q8_matmul":
        x = rand(rng, 3, k)
        out = padded_output((3, n))
        with tuning.override(q8_prefill_path=path):
            q8_matmul(rt.upload(x), w, out=out)
        return out.numpy()[:, rows], q8_matmul_ref(x, sub_q, sub_d, path)
    x = rand(rng, k)
    out = padded_output((n,))
    if op == "q8_matvec_swiglu":  # each row piece quantizes silu(gate) * up itself
        from .elementwise import swiglu

        up = rand(rng, k)
        act = swiglu(rt.upload(x), rt.upload(up)).numpy()
        q8_matvec_swiglu(rt.upload(x), rt.upload(up), w, out=out, path="dot4")
        return out.numpy()[rows], q8_matvec_ref(act, sub_q, sub_d)
    fn, ref = (q8_matvec, q8_matvec_ref) if op == "q8_matvec" else (q8_matvec_f32, q8_matvec_f32_ref)
    fn(rt.upload(x), w, out=out)
    return out.numpy()[rows], ref(x, sub_q, sub_d)


def cases():
    matvec = [dict(n=n, k=k) for n, k in MATVEC_SHAPES]
    return [
        *sweep("q8_0", "q8_matvec", NMSE_Q8_EXACT, _q8_matvec_case, matvec, quick=[dict(n=33, k=96)]),
        # The separate quantize_act pass, which K past fuses_quantization takes; K = 32768 is past lavapipe's
        # 32 KiB of workgroup storage (and the tables' q8_fuse_max_k) on its own.
        *sweep("q8_0", "q8_matvec", NMSE_Q8_EXACT, _q8_matvec_case,
               [dict(n=n, k=k, fused=False) for n, k in MATVEC_SHAPES + [(40, 32768)]],
               quick=[dict(n=33, k=96, fused=False)]),
        *sweep("q8_0", "q8_matvec_multi", NMSE_Q8_EXACT, _q8_multi_case,
               [dict(rows=r, k=k, path=pa) for r in [(37, 5, 5), (64, 16), (1, 300, 7)] for k in (96, 2048)
                for pa in PATHS], quick=[dict(rows=(37, 5, 5), k=96, path=pa) for pa in PATHS]),
        *sweep("q8_0", "q8_matvec_multi_quantized", NMSE_Q8_EXACT, _q8_multi_quantized_case,
               [dict(rows=r, k=k) for r in [(37, 5, 5), (64, 16), (1, 300, 7)] for k in (96, 2048)],
               quick=[dict(rows=(37, 5, 5), k=96)]),
        *sweep("q8_0", "q8_matvec_multi_norm", NMSE_DOT4_VS_F32, _q8_multi_norm_case,
               [dict(rows=r, k=k, delta=dl) for r in [(37, 33, 33), (64, 40), (40, 300, 35)] for k in (96, 2048)
                for dl in (True, False)], quick=[dict(rows=(37, 33, 33), k=96, delta=True)]),
        *sweep("q8_0", "q8_matvec_swiglu", NMSE_Q8_EXACT, _q8_swiglu_case,
               [dict(n=n, k=k, path=pa) for n, k in MATVEC_SHAPES + [(40, 6144)] for pa in PATHS]
               + [dict(n=n, k=k, path="dot4", fused=False) for n, k in [(33, 96), (40, 32768)]],
               quick=[dict(n=33, k=96, path=pa) for pa in PATHS]),
        *sweep("q8_0", "q8_matvec_f32", NMSE_Q8_EXACT, _q8_matvec_f32_case, matvec, quick=[dict(n=33, k=96)]),
        # Both prefill paths (the tuning table's q8_prefill_path), and dot4 on rows whose rounding matters.
        *sweep("q8_0", "q8_matmul", NMSE_Q8_EXACT, _q8_matmul_case,
               [dict(m=m, n=n, k=k, path=pa) for m, n, k in MATMUL_SHAPES for pa in PATHS]
               + [dict(m=m, n=n, k=k, path="dot4", rounding=True) for m, n, k in [(17, 33, 96), (70, 130, 1056)]],
               quick=[dict(m=17, n=33, k=96, path=pa) for pa in PATHS]),
        *sweep("q8_0", "q8_linears", NMSE_Q8_EXACT, _q8_linears_prefill_case,
               [dict(rows=r, m=m, k=k, path=pa) for r, m, k in [((37, 5, 5), 3, 96), ((64, 130), 70, 256)]
                for pa in PATHS]),
        *[case for op in ("q8_matvec", "q8_matvec_f32", "q8_matvec_swiglu")
          for case in sweep("q8_0", op, NMSE_Q8_EXACT, partial(_split_binding_case, op=op), [dict(n=16400, k=8192)],
                            large=True)],
        *sweep("q8_0", "q8_matmul", NMSE_Q8_EXACT, partial(_split_binding_case, op="q8_matmul"),
               [dict(n=16400, k=8192, path=pa) for pa in PATHS], large=True),
    ]
