"""Causal 1-D convolutions of code2wav on channels-first f32 activations [C, T] (batch 1), exactly as
Transformers' Qwen3OmniMoeCausalConvNet and Qwen3OmniMoeCausalTransConvNet compute them.

conv1d: nn.Conv1d (any K, stride, dilation, groups) after HF's padding: `P = (K - 1) * dilation + 1 - stride`
zeros on the left (negative P: a crop) and `_get_extra_padding_for_conv1d` zeros on the right, which
makes T_out = ceil(T_in / stride). conv_transpose1d: nn.ConvTranspose1d (groups 1) with its first and
last K - stride outputs trimmed, T_out = T_in * stride + stride - K.

Weights are in torch's layouts ([C_out, C_in / groups, K] and [C_in, C_out, K]), f32, f16 or bf16. Each op
has a direct kernel (one thread per output, any groups) and a tiled one (groups 1), picked by `tiled`
(default: tiled from TILED_MIN_ROWS output channels). The tiled kernels are implicit GEMMs with the prefill
matmul's structure (lib/tiles.wgsl: 64 x 64 output tiles, 16 x 16 threads of 4 x 4 outputs, 32 values of
the reduction staged a step in workgroup memory, the next step's loads in flight), and wide entries of
128 x 128 tiles, 16 x 16 threads of 8 x 8 outputs (twice the FMAs per workgroup-memory read), 16 or 32 values
a step, for more than 64 output channels where there are enough such tiles (tile_for): conv1d reduces over
kk = ci * K + k, the weight's own rows, against the im2col matrix x[ci, t * stride + k * dilation - P],
gathered while staging; conv_transpose1d is polyphase, one GEMM per output phase t = q * stride + r - P
over kk = ci * ceil(K / stride) + m (taps k = r + m * stride < K on input q - m). A tensor past the storage-binding limit (a long utterance's [C, T]
activations) is bound in windows of channel rows (ops/pieces.py): one dispatch per (output rows, input
rows) pair, the first of a row's input pieces writing bias (+ residual) and the rest adding their partial
sums.

conv2d: nn.Conv2d (groups 1, square kernel, zero padding) over a batch of images [N, C_in, H, W], the audio
encoder's stem (shaders/conv2d.wgsl); its `frames` output layout [N, W_out, C_out * H_out] is the stem's last
conv as the rows its conv_out linear reads.
"""

from __future__ import annotations

import math

import numpy as np

from ..gpu import Tensor, pack_params, runtime, tuning
from ..gpu.runtime import groups_for
from ._check import dtype_in, expect
from .pieces import rows_per_window, spans, window
from .registry import Case, padded_output, sweep
from .tiles import k_splits, split_into, split_sizes

WG = 256
WTYPE = {"f32": 0, "f16": 1, "bf16": 2}
WEIGHT_DTYPES = tuple(WTYPE)
FLAG_BIAS, FLAG_ACCUMULATE, FLAG_RESIDUAL = 1, 2, 4  # shaders/conv.wgsl

_absent: dict[str, Tensor] = {}


def _dummy(role: str) -> Tensor:
    """A small stand-in for a missing bias or residual (one each: one is bound read-only, one read_write)."""
    t = _absent.get(role)
    if t is None:
        t = _absent[role] = runtime().empty((4,), "f32", label=f"conv.absent_{role}")
    return t


def causal_padding(t_in: int, kernel_size: int, stride: int = 1, dilation: int = 1) -> tuple[int, int, int]:
    """(left, right, T_out) of Qwen3OmniMoeCausalConvNet on T_in samples, with its own arithmetic: left =
    effective K - stride (negative crops), right = `_get_extra_padding_for_conv1d`."""
    k_eff = (kernel_size - 1) * dilation + 1
    left = k_eff - stride
    n_frames = (t_in - k_eff + left) / stride + 1
    ideal_length = (math.ceil(n_frames) - 1) * stride + (k_eff - left)
    right = ideal_length - t_in
    t_out = (t_in + left + right - k_eff) // stride + 1
    return left, right, t_out


def transposed_length(t_in: int, kernel_size: int, stride: int) -> int:
    """T_out of Qwen3OmniMoeCausalTransConvNet: (T_in - 1) * stride + K, less K - stride at each end."""
    return (t_in - 1) * stride + kernel_size - 2 * (kernel_size - stride)


def _shared(a: Tensor, b: Tensor) -> bool:
    return a.buffer is b.buffer


def _output(kernel: str, out: Tensor | None, shape: tuple[int, int], x: Tensor) -> Tensor:
    if out is None:
        return runtime().empty(shape, "f32", label=kernel)
    expect(kernel, out.shape == shape and out.dtype == "f32", f"out must be {shape} f32", out=out, x=x)
    expect(kernel, not _shared(out, x), "out must not share x's buffer (no in-place convolution)", out=out, x=x)
    return out


def _bias(kernel: str, bias: Tensor | None, c_out: int) -> None:
    if bias is not None:
        dtype_in(kernel, "bias", bias, ("f32",))
        expect(kernel, bias.shape == (c_out,), f"bias must be [{c_out}] (C_out)", bias=bias)


# The tiled kernels (shaders/conv.wgsl): implicit GEMMs on tiles of TILE output channels x TILE columns
# (output steps; for the transpose, positions q of one phase), 16 x 16 threads of 4 x 4 outputs, the K loop
# staging TILE_K values of kk a step as two [TILE_K][TILE] f32 tiles (W and B) in workgroup memory; and
# their wide entries, tiles of WIDE x WIDE by 16 x 16 threads of 8 x 8 outputs, WIDE_K_STEPS kk a step.
TILE = 64
TILE_K = 32
WIDE = 128
WIDE_K_STEPS = (16, 32)  # tuning's conv_wide_k_step: 16 KiB (WebGPU's minimum) or 32 KiB of staged tiles
TILES = (TILE, WIDE)
TILE_THREADS = 256
TILE_MEMORY = 2 * TILE_K * TILE * 4  # bytes: the shader's wtile and btile
TILED_MIN_ROWS = 16  # below this a 64-channel tile is mostly idle (the final conv to 1 channel)


def _tiled_fits() -> bool:
    """Whether the tiled kernels' fixed workgroup (threads, workgroup memory) fits the adapter (the wide
    entries at 16 kk a step take the same 16 KiB)."""
    limits = runtime().gpu.limits
    return (TILE_THREADS <= limits.get("max-compute-invocations-per-workgroup", 256)
            and TILE_MEMORY <= limits.get("max-compute-workgroup-storage-size", 16384))


def wide_k_step() -> int:
    """kk a step of the wide entries: the tuning table's conv_wide_k_step, 16 where the adapter's workgroup
    storage does not hold the two [32][128] f32 tiles of 32."""
    k = tuning.current().conv_wide_k_step
    if 2 * k * WIDE * 4 > runtime().gpu.limits.get("max-compute-workgroup-storage-size", 16384):
        k = WIDE_K_STEPS[0]
    return k


def tile_for(c_out: int, columns: int, phases: int = 1) -> int:
    """The tile of a tiled conv of c_out output channels over `columns` columns in each of `phases` phases
    (conv1d: T_out steps, 1 phase; the transpose: the q positions of each of its S phases).

    A wide tile's thread reads 4 vec4 of workgroup memory per 64 FMAs, a 64-tile's 2 per 16: twice the FMAs
    a read. But a wide tile covers four times the outputs, so it is the choice only where it is not mostly
    idle and there are enough of them: C_out > 64 (at 64 or fewer channels a 128-channel tile is at least
    half padding, a 64-channel one is not), and at least the tuning table's conv_wide_min_tiles of them
    (fewer would leave some of the GPU's cores without a workgroup, where four times as many 64-tiles
    would reach them all: a streamed chunk's first decoder block has 78 wide tiles, 300 narrow ones)."""
    wide_tiles = -(-c_out // WIDE) * phases * -(-columns // WIDE)
    return WIDE if c_out > TILE and wide_tiles >= tuning.current().conv_wide_min_tiles else TILE


def _kernel(kn: str, tiled: bool | None, tile: int | None, constants: dict | None, weight: Tensor, x: Tensor,
            c_out: int, t_out: int, columns: int, phases: int, no_tile: str):
    """The kernel of op kn (conv1d or conv_transpose1d) for its `tiled` argument, its direct or tiled entry
    (None: tiled from TILED_MIN_ROWS output channels where `constants`, the tiled entry's override
    constants, are given), and the workgroup count of a dispatch of n output rows: for a tiled entry,
    channel tiles x phases x column tiles of `columns`. `tile`: the tiled entry's tile, TILE or WIDE (None:
    tile_for)."""
    if tiled is None:
        tiled = constants is not None and c_out >= TILED_MIN_ROWS
    expect(kn, not tiled or constants is not None, no_tile, x=x, weight=weight)
    expect(kn, tile is None or tile in TILES, f"tile must be one of {TILES} or None, got {tile!r}")
    if tiled:
        tile = tile or tile_for(c_out, columns, phases)
        column_tiles = phases * -(-columns // tile)
        if tile == WIDE:
            kern = runtime().kernel("conv", f"{kn}_tiled_wide", WTYPE=WTYPE[weight.dtype], TKW=wide_k_step(),
                                    **constants)
        else:
            kern = runtime().kernel("conv", f"{kn}_tiled", WTYPE=WTYPE[weight.dtype], **constants)
        return kern, lambda n: -(-n // tile) * column_tiles  # one workgroup per tile
    kern = runtime().kernel("conv", kn, WG=WG, WTYPE=WTYPE[weight.dtype])
    return kern, lambda n: -(-n * t_out // WG)  # one thread per output


def conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None, *, stride: int = 1, dilation: int = 1,
           groups: int = 1, residual: Tensor | None = None, out: Tensor | None = None,
           tiled: bool | None = None, tile: int | None = None, splits: int | None = None) -> Tensor:
    """Qwen3OmniMoeCausalConvNet: x [C_in, T_in] f32, weight [C_out, C_in / groups, K] f32/f16/bf16, bias
    [C_out] f32 or None -> [C_out, ceil(T_in / stride)] f32. residual [C_out, T_out] f32, if given, is added
    to the result (out may be residual: y += conv(x)); it must not share x's buffer.

    tiled: the workgroup-tiled kernel (groups = 1 only) or the one-thread-per-output one; None picks tiled
    for groups = 1 with at least TILED_MIN_ROWS output channels where its workgroup memory fits. tile: the
    tiled kernel's tile, 64 or 128 channels x steps (None: tile_for). splits: of the 64-tiles' K (C_in K)
    over workgroups, whose partial sums split_sum adds (None: tiles.k_splits, where the conv is one
    dispatch)."""
    kn = "conv1d"
    dtype_in(kn, "x", x, ("f32",))
    dtype_in(kn, "weight", weight, WEIGHT_DTYPES)
    expect(kn, len(x.shape) == 2 and x.shape[0] > 0 and x.shape[1] > 0, "x must be [C_in, T] with C_in, T > 0", x=x)
    expect(kn, len(weight.shape) == 3 and min(weight.shape) > 0, "weight must be [C_out, C_in / groups, K]", weight=weight)
    (c_in, t_in), (c_out, cin_g, k) = x.shape, weight.shape
    groups, stride, dilation = int(groups), int(stride), int(dilation)
    expect(kn, groups >= 1 and c_in % groups == 0 and c_out % groups == 0,
           f"groups = {groups} must divide C_in = {c_in} and C_out = {c_out}", x=x, weight=weight)
    expect(kn, cin_g == c_in // groups, f"weight must be [C_out, {c_in // groups}, K] for C_in = {c_in}, "
           f"groups = {groups}", x=x, weight=weight)
    expect(kn, stride >= 1 and dilation >= 1, f"stride and dilation must be >= 1, got {stride}, {dilation}")
    _bias(kn, bias, c_out)
    left, _, t_out = causal_padding(t_in, k, stride, dilation)
    expect(kn, t_in + left >= 0, f"T = {t_in} is shorter than the {-left} samples HF's negative left padding crops "
           f"(stride {stride} past the dilated kernel {(k - 1) * dilation + 1}; torch's F.pad fails too)", x=x, weight=weight)
    out = _output(kn, out, (c_out, t_out), x)
    if residual is not None:
        dtype_in(kn, "residual", residual, ("f32",))
        expect(kn, residual.shape == (c_out, t_out), f"residual must be [{c_out}, {t_out}] (the output's shape)",
               residual=residual)
        expect(kn, not _shared(residual, x), "residual must not share x's buffer", residual=residual, x=x)

    cout_g = c_out // groups
    rows_in = rows_per_window(kn, "x", x, t_in)
    rows_out = min(rows_per_window(kn, "out", out, t_out), rows_per_window(kn, "weight", weight, cin_g * k))
    if residual is not None:
        rows_out = min(rows_out, rows_per_window(kn, "residual", residual, t_out))
    constants = dict(KT=k, ST=stride, DT=dilation) if groups == 1 and _tiled_fits() else None
    kern, n_groups = _kernel(kn, tiled, tile, constants, weight, x, c_out, t_out, t_out, 1,
                             "the tiled kernel needs groups = 1 and a workgroup that fits the adapter")
    b = bias if bias is not None else _dummy("bias")
    nk = c_in * k
    if kern.name == "conv.conv1d_tiled" and rows_out >= c_out and rows_in >= c_in:
        k_split, s = split_sizes(nk, splits or k_splits(n_groups(c_out), nk, c_out, t_out), TILE_K)
        if s > 1:  # the planes [s, C_out, T_out] of partial sums, then split_sum adds them into out
            plane = c_out * t_out
            y, y_off = window(out, 0, plane)
            xw, x_off = window(x, 0, c_in * t_in)
            w, w_off = window(weight, 0, c_out * cin_g * k)
            r, r_off = window(residual, 0, plane) if residual is not None else (_dummy("residual"), 0)
            flags = FLAG_BIAS * (bias is not None) | FLAG_RESIDUAL * (residual is not None)
            params = pack_params(t_in, t_out, c_out, 0, 0, c_in, cin_g, cout_g, k, stride, dilation, left,
                                 x_off, w_off, 0, r_off, flags, k_split, plane)
            gx, gy, _ = groups_for(n_groups(c_out))
            split_into(s, plane, t_out, t_out, y_off, lambda part: kern((gx, gy, s), params, xw, w, b, part, r), y)
            return out
    for o0, o1 in spans(0, c_out, rows_out):
        n = o1 - o0
        y, y_off = window(out, o0 * t_out, n * t_out)
        w, w_off = window(weight, o0 * cin_g * k, n * cin_g * k)
        r, r_off = window(residual, o0 * t_out, n * t_out) if residual is not None else (_dummy("residual"), 0)
        first_ci = o0 // cout_g * cin_g  # the input channels of the groups of rows [o0, o1)
        last_ci = ((o1 - 1) // cout_g + 1) * cin_g
        for piece, (i0, i1) in enumerate(spans(first_ci, last_ci, rows_in)):
            xw, x_off = window(x, i0 * t_in, (i1 - i0) * t_in)
            flags = FLAG_ACCUMULATE if piece else (FLAG_BIAS * (bias is not None) | FLAG_RESIDUAL * (residual is not None))
            params = pack_params(t_in, t_out, n, o0, i0, i1, cin_g, cout_g, k, stride, dilation, left,
                                 x_off, w_off, y_off, r_off, flags, nk, 0)
            kern(n_groups(n), params, xw, w, b, y, r)
    return out


def conv_transpose1d(x: Tensor, weight: Tensor, bias: Tensor | None = None, *, stride: int = 1,
                     out: Tensor | None = None, tiled: bool | None = None, tile: int | None = None) -> Tensor:
    """Qwen3OmniMoeCausalTransConvNet: x [C_in, T_in] f32, weight [C_in, C_out, K] f32/f16/bf16 (K >= stride),
    bias [C_out] f32 or None -> [C_out, T_in * stride + stride - K] f32.

    tiled: the workgroup-tiled kernel or the one-thread-per-output one; None picks tiled for at least
    TILED_MIN_ROWS output channels where its workgroup memory fits. tile: the tiled kernel's tile, 64 or 128
    channels x positions of a phase (None: tile_for)."""
    kn = "conv_transpose1d"
    dtype_in(kn, "x", x, ("f32",))
    dtype_in(kn, "weight", weight, WEIGHT_DTYPES)
    expect(kn, len(x.shape) == 2 and x.shape[0] > 0 and x.shape[1] > 0, "x must be [C_in, T] with C_in, T > 0", x=x)
    expect(kn, len(weight.shape) == 3 and min(weight.shape) > 0 and weight.shape[0] == x.shape[0],
           f"weight must be [{x.shape[0]} (C_in), C_out, K]", x=x, weight=weight)
    (c_in, t_in), (_, c_out, k) = x.shape, weight.shape
    stride = int(stride)
    expect(kn, 1 <= stride <= k, f"stride must be in 1 .. K = {k} (HF trims K - stride from each end), got {stride}",
           weight=weight)
    _bias(kn, bias, c_out)
    pad = k - stride
    t_out = transposed_length(t_in, k, stride)
    out = _output(kn, out, (c_out, max(t_out, 0)), x)
    if t_out <= 0:
        return out
    rows_in = min(rows_per_window(kn, "x", x, t_in), rows_per_window(kn, "weight", weight, c_out * k))
    rows_out = rows_per_window(kn, "out", out, t_out)
    # Polyphase: output t = q S + r - P is phase r's position q; the outputs' q run from P // S on.
    n_q = (t_out - 1 + pad) // stride + 1 - pad // stride
    kern, n_groups = _kernel(kn, tiled, tile, dict(KT=k, ST=stride) if _tiled_fits() else None, weight, x, c_out,
                             t_out, n_q, stride, "the tiled kernel's workgroup does not fit the adapter")
    b = bias if bias is not None else _dummy("bias")
    r = _dummy("residual")
    for o0, o1 in spans(0, c_out, rows_out):
        n = o1 - o0
        y, y_off = window(out, o0 * t_out, n * t_out)
        for piece, (i0, i1) in enumerate(spans(0, c_in, rows_in)):
            xw, x_off = window(x, i0 * t_in, (i1 - i0) * t_in)
            w, w_off = window(weight, i0 * c_out * k, (i1 - i0) * c_out * k)
            flags = FLAG_ACCUMULATE if piece else FLAG_BIAS * (bias is not None)
            params = pack_params(t_in, t_out, n, o0, i0, i1, 0, c_out, k, stride, 1, pad,
                                 x_off, w_off, y_off, 0, flags)
            kern(n_groups(n), params, xw, w, b, y, r)
    return out


def conv2d_length(n: int, k: int, stride: int, pad: int) -> int:
    """nn.Conv2d's output length along one axis of n."""
    return (n + 2 * pad - k) // stride + 1


def conv2d(x: Tensor, weight: Tensor, bias: Tensor, *, stride: int = 1, pad: int = 0, frames: bool = False,
           out: Tensor | None = None) -> Tensor:
    """nn.Conv2d: x [N, C_in, H, W] f32, weight [C_out, C_in, K, K] f32/f16/bf16, bias [C_out] f32 ->
    [N, C_out, H_out, W_out] f32, or with `frames` [N, W_out, C_out * H_out] (frame j's features, channel
    major). No binding windows: a tensor past the adapter's storage binding is refused by the runtime."""
    kn = "conv2d"
    dtype_in(kn, "x", x, ("f32",))
    dtype_in(kn, "weight", weight, WEIGHT_DTYPES)
    expect(kn, len(x.shape) == 4 and min(x.shape) > 0, "x must be [N, C_in, H, W], all > 0", x=x)
    expect(kn, len(weight.shape) == 4 and weight.shape[2] == weight.shape[3] and weight.shape[1] == x.shape[1],
           f"weight must be [C_out, {x.shape[1]}, K, K]", x=x, weight=weight)
    n, c_in, h, w = x.shape
    c_out, _, k, _ = weight.shape
    stride, pad = int(stride), int(pad)
    expect(kn, stride >= 1 and 0 <= pad < k, f"stride must be >= 1 and padding in 0 .. K - 1, got {stride}, {pad}")
    h_out, w_out = conv2d_length(h, k, stride, pad), conv2d_length(w, k, stride, pad)
    expect(kn, h_out > 0 and w_out > 0, f"a {k}x{k} kernel does not fit a {h}x{w} image with padding {pad}", x=x)
    _bias(kn, bias, c_out)
    out = _output(kn, out, (n, w_out, c_out * h_out) if frames else (n, c_out, h_out, w_out), x)
    total = n * c_out * h_out * w_out
    kern = runtime().kernel("conv2d", "main", WG=WG, WTYPE=WTYPE[weight.dtype])
    kern(-(-total // WG), pack_params(n, c_in, h, w, c_out, h_out, w_out, k, stride, pad, int(frames)), x, weight, bias,
         out)
    return out


# -- numpy references (float64 inside, float32 out) ------------------------------------------------

def conv1d_ref(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, *, stride: int = 1,
               dilation: int = 1, groups: int = 1, residual: np.ndarray | None = None) -> np.ndarray:
    """HF's causal padding, then nn.Conv1d, in float64."""
    x64 = np.asarray(x, np.float64)
    w64 = np.asarray(weight, np.float64)
    c_in, t_in = x64.shape
    c_out, cin_g, k = w64.shape
    left, right, t_out = causal_padding(t_in, k, stride, dilation)
    xp = x64[:, -left:] if left < 0 else np.pad(x64, ((0, 0), (left, 0)))  # F.pad: a negative pad crops
    xp = np.pad(xp, ((0, 0), (0, right)))
    cout_g = c_out // groups
    y = np.zeros((c_out, t_out))
    for g in range(groups):
        xg = xp[g * cin_g:(g + 1) * cin_g]
        wg = w64[g * cout_g:(g + 1) * cout_g]
        for kk in range(k):
            taps = xg[:, kk * dilation: kk * dilation + (t_out - 1) * stride + 1: stride]  # [cin_g, T_out]
            y[g * cout_g:(g + 1) * cout_g] += wg[:, :, kk] @ taps
    if bias is not None:
        y += np.asarray(bias, np.float64)[:, None]
    if residual is not None:
        y += np.asarray(residual, np.float64)
    return y.astype(np.float32)


def conv_transpose1d_ref(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, *,
                         stride: int = 1) -> np.ndarray:
    """nn.ConvTranspose1d, then HF's trim of K - stride at each end, in float64."""
    x64 = np.asarray(x, np.float64)
    w64 = np.asarray(weight, np.float64)
    t_in = x64.shape[1]
    _, c_out, k = w64.shape
    full = np.zeros((c_out, (t_in - 1) * stride + k))
    for kk in range(k):
        full[:, kk: kk + (t_in - 1) * stride + 1: stride] += w64[:, :, kk].T @ x64
    if bias is not None:
        full += np.asarray(bias, np.float64)[:, None]
    pad = k - stride
    return full[:, pad: full.shape[1] - pad].astype(np.float32)


def conv2d_ref(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, *, stride: int = 1, pad: int = 0,
               frames: bool = False) -> np.ndarray:
    """nn.Conv2d in float64; with `frames` the output as [N, W_out, C_out * H_out]."""
    x64 = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    w64 = np.asarray(weight, np.float64)
    n, _, hp, wp = x64.shape
    c_out, _, k, _ = w64.shape
    h_out, w_out = (hp - k) // stride + 1, (wp - k) // stride + 1
    y = np.zeros((n, c_out, h_out, w_out)) + np.asarray(bias, np.float64)[None, :, None, None]
    for a in range(k):
        for b in range(k):
            taps = x64[:, :, a: a + (h_out - 1) * stride + 1: stride, b: b + (w_out - 1) * stride + 1: stride]
            y += np.einsum("oc,nchw->nohw", w64[:, :, a, b], taps)
    if frames:  # [N, C, H, W] -> [N, W, C * H]
        y = y.transpose(0, 3, 1, 2).reshape(n, w_out, c_out * h_out)
    return y.astype(np.float32)


# -- the sweep (read by the op registry, tests/test_conv.py, selfcheck) -----------------------------

# Sums of C_in / groups * K products in f32 against float64: NMSE sits near 1e-14 (f32 weights);
# 16-bit weights are rounded on both sides (the reference reads the stored values), so the same.
BOUND = 5e-4 * 1e-6


def _stored(rng: np.random.Generator, shape, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    from .linear import stored

    w = (rng.standard_normal(shape) / math.sqrt(shape[1] * shape[2])).astype(np.float32)
    return stored(w, dtype)


def _conv1d_case(rng, c_in, c_out, t, k, stride=1, dilation=1, groups=1, dtype="f32", bias=True, residual=False,
                 tiled=False, tile=None, k_step=32, splits=1):
    rt = runtime()
    x = rng.standard_normal((c_in, t)).astype(np.float32)
    host, seen = _stored(rng, (c_out, c_in // groups, k), dtype)
    b = rng.standard_normal(c_out).astype(np.float32) if bias else None
    t_out = causal_padding(t, k, stride, dilation)[2]
    r = rng.standard_normal((c_out, t_out)).astype(np.float32) if residual else None
    out = padded_output((c_out, t_out))
    with tuning.override(conv_wide_k_step=k_step):
        conv1d(rt.upload(x), rt.upload(host, dtype), None if b is None else rt.upload(b), stride=stride,
               dilation=dilation, groups=groups, residual=None if r is None else rt.upload(r), out=out, tiled=tiled,
               tile=tile, splits=splits)
    return out.numpy(), conv1d_ref(x, seen, b, stride=stride, dilation=dilation, groups=groups, residual=r)


def _transpose_case(rng, c_in, c_out, t, k, stride, dtype="f32", bias=True, tiled=False, tile=None, k_step=32):
    rt = runtime()
    x = rng.standard_normal((c_in, t)).astype(np.float32)
    host, seen = _stored(rng, (c_in, c_out, k), dtype)
    b = rng.standard_normal(c_out).astype(np.float32) if bias else None
    out = padded_output((c_out, transposed_length(t, k, stride)))
    with tuning.override(conv_wide_k_step=k_step):
        conv_transpose1d(rt.upload(x), rt.upload(host, dtype), None if b is None else rt.upload(b), stride=stride,
                         out=out, tiled=tiled, tile=tile)
    return out.numpy(), conv_transpose1d_ref(x, seen, b, stride=stride)


# conv1d: (C_in, C_out, T, K, stride, dilation, groups, weight dtype). Ragged T and C; K 1/3/5/7; dilation
# 1/3/9; stride 1/2/4/5/8 (past K too: a negative left pad); groups 1, 3 and depthwise; the residual unit's
# and ConvNeXt's shapes in small.
CONV1D_SWEEP = [
    (5, 7, 33, 7, 1, 1, 1, "f32"),
    (13, 6, 100, 3, 1, 3, 1, "bf16"),
    (9, 9, 257, 7, 1, 9, 1, "f16"),
    (16, 16, 61, 5, 2, 1, 1, "bf16"),
    (7, 11, 97, 7, 4, 3, 1, "f32"),
    (6, 3, 131, 5, 5, 1, 1, "bf16"),
    (3, 5, 203, 3, 8, 1, 1, "f32"),
    (4, 4, 50, 1, 2, 1, 1, "f32"),      # stride past the kernel: left pad -1 crops
    (10, 10, 77, 1, 1, 1, 1, "bf16"),   # the residual unit's 1x1 conv
    (33, 33, 45, 7, 1, 1, 33, "f32"),   # depthwise (ConvNeXt's dwconv)
    (24, 24, 129, 7, 1, 1, 24, "bf16"),
    (12, 9, 41, 3, 2, 1, 3, "f32"),     # grouped, 4 in / 3 out per group
    (20, 1, 300, 7, 1, 1, 1, "bf16"),   # the final conv to one channel
    (1, 1, 1, 7, 1, 9, 1, "f32"),       # one sample, taps far past both ends
    (2, 3, 5, 5, 8, 3, 1, "f16"),       # T shorter than stride and kernel
]

# conv1d_tiled, groups 1: (C_in, C_out, T, K, stride, dilation, weight dtype). Partial tiles in both
# directions, C_in K not a multiple of the 32 kk of a step, K 1 to 33, dilation 9, stride 8 (past K).
TILED_SWEEP = [
    (40, 70, 300, 7, 1, 9, "bf16"),     # the residual unit's dilation-9 conv
    (33, 65, 130, 1, 1, 1, "f32"),      # its 1x1 conv: kk = ci, one step and one channel more
    (70, 33, 257, 7, 8, 9, "f16"),      # the widest window
    (129, 67, 61, 3, 1, 3, "bf16"),
    (17, 130, 97, 5, 2, 1, "f32"),
    (64, 64, 256, 7, 1, 1, "bf16"),     # whole tiles only
    (25, 18, 75, 3, 5, 1, "bf16"),
    (5, 16, 9, 7, 4, 3, "f32"),         # T shorter than the tile's taps
    (3, 20, 70, 7, 1, 3, "bf16"),       # C_in K = 21: one partial step whose kk cross two channel boundaries
    (6, 17, 40, 33, 1, 1, "f32"),       # K past a step: one channel's taps span two steps
    (96, 70, 130, 7, 1, 1, "bf16"),     # the last decoder block's width: C_in K = 672, 21 whole steps
    (4, 18, 50, 1, 2, 1, "f16"),        # stride past K: a negative left pad crops
]

# conv1d_tiled with its K split (splits None: as k_splits picks): (C_in, C_out, T, K, stride, dilation,
# weight dtype, splits). The last split shorter, a split boundary inside a channel's taps, bias and residual
# in the first plane only, decoder.0's shape in small.
SPLIT_SWEEP = [
    (40, 70, 300, 7, 1, 9, "bf16", 2),
    (45, 33, 61, 7, 1, 3, "f32", 3),     # C_in K = 315: 10 steps, the last split holds 2
    (96, 70, 130, 7, 1, 1, "bf16", None),
    (64, 96, 50, 7, 1, 1, "f16", 5),
]

# The wide entries (tile = 128): (C_in, C_out, T, K, stride, dilation, weight dtype, kk a step). Partial
# tiles both ways (C_out 200 = 128 + 72, 130, T 300 = 2 x 128 + 44), the last decoder block's C_out 96 (a
# quarter of each tile padding), steps whose kk cross channel boundaries, a partial last step and one
# of a single kk, whole tiles, a channel's taps across steps, both K steps.
WIDE_SWEEP = [
    (40, 200, 300, 7, 1, 9, "bf16", 32),   # C_in K = 280: 8 steps and a quarter, steps cross channels
    (33, 130, 130, 1, 1, 1, "f32", 16),    # 1x1: one channel, one step (of 16 kk) and one column more
    (96, 96, 257, 7, 1, 3, "bf16", 16),    # the last decoder block: C_in K = 672, 42 whole steps of 16
    (64, 96, 200, 7, 1, 1, "f16", 32),     # its width again at 32 kk a step: 14 whole steps
    (17, 200, 97, 5, 2, 1, "f16", 32),     # strided: C_in K = 85
    (3, 129, 70, 7, 1, 3, "bf16", 16),     # C_in K = 21: one step and a partial one, across channels
    (6, 128, 256, 33, 1, 1, "f32", 32),    # whole tiles only; K past a step
    (4, 100, 50, 1, 2, 1, "f32", 16),      # stride past K: a negative left pad crops; T < a tile
]

TRANSPOSE_SWEEP = [  # (C_in, C_out, T, K, stride, weight dtype): the code2wav K = stride and K = 2 stride
    (8, 8, 33, 2, 2, "f32"),
    (13, 7, 29, 16, 8, "bf16"),
    (9, 5, 41, 10, 5, "f16"),
    (6, 11, 23, 8, 4, "bf16"),
    (7, 3, 57, 6, 3, "f32"),
    (5, 4, 19, 7, 3, "f32"),            # K neither S nor 2 S
    (3, 6, 5, 3, 1, "bf16"),
    (4, 2, 1, 2, 2, "f32"),             # one input sample
]


# conv_transpose1d_tiled: the code2wav (K, S) and others; partial tiles, C_in ceil(K / S) not a multiple of
# the 32 kk of a step, phases with fewer taps (K = 7, S = 3), several q tiles, T shorter than a tile.
TRANSPOSE_SWEEP_TILED = [
    (70, 65, 33, 16, 8, "bf16"),        # decoder block 1's K, stride
    (33, 40, 61, 10, 5, "f16"),
    (20, 130, 50, 8, 4, "bf16"),
    (17, 18, 97, 6, 3, "f32"),
    (64, 64, 64, 2, 2, "bf16"),         # the upsampling stages' K = stride; whole tiles
    (9, 20, 40, 7, 3, "f32"),           # K neither S nor 2 S
    (5, 16, 9, 4, 1, "f32"),            # stride 1: one phase of K taps
    (11, 20, 150, 5, 5, "bf16"),        # K = S: one tap a phase, no trim; three q tiles
]

# conv_transpose1d's wide entry (tile = 128): (C_in, C_out, T, K, stride, weight dtype, kk a step): the
# decoder blocks' (K, S) at C_out 96 and 200 (partial channel tiles), partial and several q tiles, C_in
# ceil(K / S) not a multiple of a step, phases with fewer taps, both K steps.
WIDE_TRANSPOSE_SWEEP = [
    (70, 130, 33, 16, 8, "bf16", 32),   # decoder block 1's K, S: 140 kk, 4 steps and a partial one
    (33, 200, 61, 10, 5, "f16", 16),    # 66 kk: 4 steps of 16 and 2
    (40, 96, 150, 6, 3, "bf16", 32),    # the last block's K, S and width
    (9, 96, 140, 7, 3, "f32", 16),      # K neither S nor 2 S: a phase with fewer taps
    (20, 128, 300, 2, 2, "bf16", 32),   # the upsampling's K = S: 3 q tiles a phase, the last partial
    (5, 150, 150, 4, 1, "f32", 16),     # stride 1: one phase of K taps
]


def _conv2d_case(rng, n, c_in, c_out, h, w, k=3, stride=2, pad=1, dtype="f32", frames=False):
    rt = runtime()
    x = rng.standard_normal((n, c_in, h, w)).astype(np.float32)
    host, seen = _stored(rng, (c_out, c_in, k, k), dtype)
    b = rng.standard_normal(c_out).astype(np.float32)
    h_out, w_out = conv2d_length(h, k, stride, pad), conv2d_length(w, k, stride, pad)
    out = padded_output((n, w_out, c_out * h_out) if frames else (n, c_out, h_out, w_out))
    conv2d(rt.upload(x), rt.upload(host, dtype), rt.upload(b), stride=stride, pad=pad, frames=frames, out=out)
    return out.numpy(), conv2d_ref(x, seen, b, stride=stride, pad=pad, frames=frames)


# (N, C_in, C_out, H, W, K, stride, pad, weight dtype, frames): the audio stem's three convs (1 -> C, C -> C,
# stride 2, padding 1) on ragged mel x frame sizes, odd sizes whose last row reads the padding, and others.
CONV2D_SWEEP = [
    (3, 1, 8, 32, 100, 3, 2, 1, "bf16", False),
    (2, 8, 8, 16, 50, 3, 2, 1, "f16", False),
    (2, 8, 6, 8, 25, 3, 2, 1, "bf16", True),
    (1, 5, 7, 13, 9, 3, 2, 1, "f32", True),
    (4, 3, 5, 7, 3, 3, 1, 1, "f32", False),
    (1, 2, 3, 11, 12, 5, 3, 2, "bf16", False),
    (1, 1, 1, 1, 1, 3, 2, 1, "f32", True),
]


def cases() -> list[Case]:
    """Every kernel of each op: conv1d direct (any groups), tiled (groups 1, `tiled=True`) on 64-tiles, whole
    and with K split, and on wide ones at both K steps, and the same for conv_transpose1d. Quick: one case of each."""
    conv = [dict(c_in=c_in, c_out=c_out, t=t, k=k, stride=s, dilation=d, groups=g, dtype=dt, bias=i % 4 != 3)
            for i, (c_in, c_out, t, k, s, d, g, dt) in enumerate(CONV1D_SWEEP)]
    conv.append(dict(c_in=11, c_out=11, t=70, k=7, dilation=3, dtype="bf16", residual=True))
    tiled = [dict(c_in=c_in, c_out=c_out, t=t, k=k, stride=s, dilation=d, dtype=dt, bias=i % 4 != 2,
                  residual=i % 3 == 0, tiled=True, tile=TILE) for i, (c_in, c_out, t, k, s, d, dt) in enumerate(TILED_SWEEP)]
    split = [dict(c_in=c_in, c_out=c_out, t=t, k=k, stride=s, dilation=d, dtype=dt, bias=i != 1, residual=i != 2,
                  tiled=True, tile=TILE, splits=n) for i, (c_in, c_out, t, k, s, d, dt, n) in enumerate(SPLIT_SWEEP)]
    wide = [dict(c_in=c_in, c_out=c_out, t=t, k=k, stride=s, dilation=d, dtype=dt, bias=i % 4 != 1,
                 residual=i % 3 == 0, tiled=True, tile=WIDE, k_step=ks)
            for i, (c_in, c_out, t, k, s, d, dt, ks) in enumerate(WIDE_SWEEP)]
    trans = [dict(c_in=c_in, c_out=c_out, t=t, k=k, stride=s, dtype=dt, bias=i != 2, tiled=False)
             for i, (c_in, c_out, t, k, s, dt) in enumerate(TRANSPOSE_SWEEP)]
    trans_tiled = [dict(c_in=c_in, c_out=c_out, t=t, k=k, stride=s, dtype=dt, bias=i != 2, tiled=True, tile=TILE)
                   for i, (c_in, c_out, t, k, s, dt) in enumerate(TRANSPOSE_SWEEP_TILED)]
    trans_wide = [dict(c_in=c_in, c_out=c_out, t=t, k=k, stride=s, dtype=dt, bias=i != 1, tiled=True, tile=WIDE,
                       k_step=ks) for i, (c_in, c_out, t, k, s, dt, ks) in enumerate(WIDE_TRANSPOSE_SWEEP)]
    conv2d = [dict(zip(("n", "c_in", "c_out", "h", "w", "k", "stride", "pad", "dtype", "frames"), c)) for c in CONV2D_SWEEP]
    return (sweep("conv", "conv1d", BOUND, _conv1d_case, conv + tiled + split + wide,
                  quick=[conv[1], tiled[0], split[0], wide[0]])
            + sweep("conv", "conv_transpose1d", BOUND, _transpose_case, trans + trans_tiled + trans_wide,
                    quick=[trans[1], trans_tiled[1], trans_wide[0]])
            + sweep("conv", "conv2d", BOUND, _conv2d_case, conv2d, quick=[conv2d[2]]))
