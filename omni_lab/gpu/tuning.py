"""Adapter-specific tuning: one table of launch shapes and path thresholds per adapter family.

The ops read `current()` at call time. The family is chosen once, from the adapter's info, when the device
opens (gpu/device.py): "nvidia" for NVIDIA GPUs, "amd-rdna3" for AMD GPUs, "default" for anything else
(lavapipe and other CPU adapters included). `omni-lab doctor` prints which table is in use.

Only performance lives here: each field changes a launch shape (results differ by f32 summation order at
most) or which of two tested kernels runs an op (the f32 paths of the Q8_0 matvec and of the Q8_0 prefill
matmul, grouped MoE experts included, keep activations in f32 where dot4 rounds them to int8). A value that
bounds correctness (workgroup memory sizes such as select.MAX_CHUNK, tiles' shader constants) stays next to
its kernel; attention_wg also bounds the head dim, and attention checks it at call time.

Tests and benchmarks change the table for a block:

    with tuning.use("amd-rdna3"): ...                   # another family's table
    with tuning.override(launch_threads=2**14): ...     # some fields of the table in use

A model records bind groups and kernels as it runs, so change the table before loading or recording one,
not between recording a decode step and replaying it.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace

Q8_PATHS = ("auto", "dot4", "f32")
Q8_PREFILL_PATHS = ("dot4", "f32")


@dataclass(frozen=True)
class Tuning:
    """One adapter family's tuning. `basis` says how its values were found; each field's comment says what
    it controls (the entries below say where each value came from)."""

    family: str
    basis: str
    # ops/linear.py: bf16/f16/f32 matvec (decode) and its fused `multi` entry.
    matvec_wg: int          # threads per workgroup
    matvec_tpr_f32: int     # threads per output row at least, f32 weights
    matvec_tpr_16bit: int   # threads per output row at least, f16 and bf16 weights
    # linear.launch_tpr (matvec, MoE experts): a launch of few rows doubles its threads per row until it
    # has this many threads, so that enough loads are in flight to hide memory latency.
    launch_threads: int
    # ops/moe.py: the per-pair expert kernels (gate_up, down) and the choice of the grouped path.
    moe_expert_wg: int              # threads per workgroup of gate_up and down (decode routes in gate_up up to this E)
    moe_min_tpr: int                # threads per output row at least, before launch_tpr widens
    moe_grouped_min_tokens: int     # tokens from which f32/f16/bf16 experts run grouped by expert
    moe_grouped_min_tokens_q8: int  # the same for Q8_0 experts
    # At one token, the experts' gate_up routes the token in every workgroup (moe.experts_gate_up_routed) in
    # place of a moe.route dispatch before it; False keeps the route dispatch (moe.routed_ok).
    moe_routed: bool
    # Subgroup operations: where the adapter has the `subgroup` feature, the kernels that have a subgroup
    # variant (shaders/*_sg.wgsl: attention's and attention_rope's decode entries, rope's norm_rope*, moe's
    # route and routed gate_up entries) run it; False keeps their workgroup-memory versions
    # (Runtime.subgroup_variant).
    subgroups: bool
    # ops/attention.py.
    attention_wg: int           # threads of `main` and `split_partial`: keys per softmax chunk; D <= 4 * this
    attention_combine_wg: int   # threads of `split_combine`
    attention_decode_wg: int    # threads of `decode`, the single-pass decode entry (one workgroup a row)
    # Decode layers with QK norm norm, rotate and append their token inside the single-pass attention
    # (attention_rope.wgsl's `decode`, `decode_q8`) where it runs, rather than in rope's norm_rope_append
    # (and quantize_act, for a Q8_0 o_proj) before attention's `decode`.
    attention_norm_rope: bool
    # Decode (T = 1) attends in one dispatch (`decode`) over caches of up to this many rows, and through
    # split_partial + split_combine over longer ones (0: split-K wherever the cache is longer than a slice).
    attention_single_max_len: int
    # Keys per slice of the split-K decode path, by cache length: ((max_len up to, keys), ...) ascending,
    # then attention_split_long keys past the last step.
    attention_split_steps: tuple[tuple[int, int], ...]
    attention_split_long: int
    # ops/attention.use_flash: multi-token attention (prefill, encoder windows) from this many tokens runs
    # shaders/flash.wgsl (blocks of 32 tokens sharing their key loads) instead of a workgroup per (token, head).
    attention_flash_min_tokens: int
    attention_flash_keys: int  # keys a tile of flash.wgsl: 8 (12 KB of workgroup memory) or 16 (24 KB)
    # norm.workgroup_for: threads of the one-workgroup-per-row kernels (norms, softmax, argmax, embedding),
    # about one per 4 elements, clamped to [row_wg_min, row_wg_max].
    row_wg_min: int
    row_wg_max: int
    # ops/select.argmax: rows wider than argmax_split_columns, fewer than argmax_split_rows of them, go
    # through the multi-workgroup top-1 instead of one workgroup per row.
    argmax_split_columns: int
    argmax_split_rows: int
    # ops/q8_0.py.
    q8_quant_wg: int           # threads per workgroup of quantize_act (one block of 32 per thread)
    q8_matvec_wg: int          # threads per workgroup of matvec_dot4 and matvec_f32
    q8_matvec_rows: int        # rows per workgroup of those matvecs
    q8_matvec_path: str        # decode matvec: "dot4", "f32", or "auto" (time both once, choose_path)
    q8_choice_shape: tuple[int, int]  # [N, K] of the weight choose_path times
    q8_f32_margin: float       # "auto" picks f32 only if it takes under this fraction of dot4's time
    # Decode entries that quantize x in each workgroup's memory instead of a quantize_act dispatch before
    # them (matvec_dot4_x, multi_*, swiglu_*; MoE gate_up_q8x / down_q8x): used for K up to q8_fuse_max_k
    # (and what the adapter's workgroup storage holds), the separate pass above it.
    q8_fuse_max_k: int
    q8_fused_min_tpr: int      # threads per row of those entries at least, before launch_tpr widens
    # Prefill's Q8_0 matmul (q8_matmul, the grouped MoE experts): "dot4" (int8 activations, quantized once
    # per matmul input, through tiles_dot4.wgsl) or "f32" (f32 activations, weights widened into the tile:
    # tiles_q8.wgsl).
    q8_prefill_path: str
    # ops/tiles.k_splits: a tiled matmul of f32 x (GATE_UP off), or a conv1d on 64-tiles, of fewer
    # workgroups than this splits K over more workgroups toward this many, and split_sum.wgsl adds the
    # partial sums; 0: never.
    matmul_split_below: int
    # ops/conv.tile_for: a tiled conv of more than 64 output channels runs the wide entries (128 x 128 tiles,
    # 8 x 8 outputs a thread) where it makes at least conv_wide_min_tiles of them, else 64 x 64 tiles.
    conv_wide_min_tiles: int
    conv_wide_k_step: int      # kk a step of the wide entries: 16 or 32 (16 where the adapter lacks 32 KiB)

    def __post_init__(self):
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"tuning {self.family}: {what}")

        pow2 = ("matvec_wg", "matvec_tpr_f32", "matvec_tpr_16bit", "moe_expert_wg", "moe_min_tpr", "attention_wg",
                "attention_combine_wg", "attention_decode_wg", "row_wg_min", "row_wg_max", "q8_quant_wg", "q8_matvec_wg",
                "q8_matvec_rows", "q8_fused_min_tpr")
        for name in pow2:
            v = getattr(self, name)
            need(isinstance(v, int) and v > 0 and v & (v - 1) == 0, f"{name} must be a power of two, got {v!r}")
        need(self.matvec_tpr_f32 <= self.matvec_wg and self.matvec_tpr_16bit <= self.matvec_wg,
             "matvec threads per row must not exceed matvec_wg")
        need(self.attention_combine_wg >= self.attention_wg,
             "attention_combine_wg must be at least attention_wg (both must cover D / 4 threads)")
        for name in ("attention_wg", "attention_combine_wg", "attention_decode_wg"):
            need(16 <= getattr(self, name) <= 1024, f"{name} must be in 16 .. 1024 (lib/reduce.wgsl's reductions)")
        need(isinstance(self.subgroups, bool), f"subgroups must be True or False, got {self.subgroups!r}")
        need(isinstance(self.moe_routed, bool), f"moe_routed must be True or False, got {self.moe_routed!r}")
        need(isinstance(self.attention_norm_rope, bool),
             f"attention_norm_rope must be True or False, got {self.attention_norm_rope!r}")
        need(self.attention_single_max_len >= 0, "attention_single_max_len must be >= 0")
        need(self.moe_min_tpr <= self.moe_expert_wg, "moe_min_tpr must not exceed moe_expert_wg")
        need(self.row_wg_min <= self.row_wg_max, "row_wg_min must not exceed row_wg_max")
        need(self.q8_matvec_rows <= self.q8_matvec_wg, "q8_matvec_rows must not exceed q8_matvec_wg")
        need(self.q8_matvec_path in Q8_PATHS, f"q8_matvec_path must be one of {', '.join(Q8_PATHS)}, "
                                              f"got {self.q8_matvec_path!r}")
        need(0 < self.q8_f32_margin <= 1, f"q8_f32_margin must be in (0, 1], got {self.q8_f32_margin!r}")
        need(self.q8_fused_min_tpr <= self.q8_matvec_wg, "q8_fused_min_tpr must not exceed q8_matvec_wg")
        need(self.q8_fuse_max_k >= 0 and self.q8_fuse_max_k % 32 == 0,
             f"q8_fuse_max_k must be a non-negative multiple of 32, got {self.q8_fuse_max_k!r}")
        need(self.matmul_split_below >= 0, f"matmul_split_below must be >= 0, got {self.matmul_split_below!r}")
        need(self.conv_wide_min_tiles >= 0, f"conv_wide_min_tiles must be >= 0, got {self.conv_wide_min_tiles!r}")
        need(self.conv_wide_k_step in (16, 32), f"conv_wide_k_step must be 16 or 32, got {self.conv_wide_k_step!r}")
        need(self.attention_flash_keys in (8, 16), f"attention_flash_keys must be 8 or 16, got {self.attention_flash_keys!r}")
        need(self.q8_prefill_path in Q8_PREFILL_PATHS, f"q8_prefill_path must be one of "
                                                       f"{', '.join(Q8_PREFILL_PATHS)}, got {self.q8_prefill_path!r}")
        lens = [n for n, _ in self.attention_split_steps]
        need(lens == sorted(lens) and all(k > 0 for _, k in self.attention_split_steps) and self.attention_split_long > 0,
             "attention_split_steps must rise by max_len, with positive key counts")


# A block of flash.wgsl is 32 tokens; below half a block most of its threads would hold no token. Reasoned,
# the same for every family until measured (bench/kernels.py --attention).
FLASH_MIN_TOKENS = 16

# Measured on an H200 through Vulkan; each value's comment names the benchmark and its stored result.
NVIDIA = Tuning(
    family="nvidia",
    basis="measured on an NVIDIA H200 through Vulkan (bench/results/*_h200_vulkan.json)",
    matvec_wg=256,
    # bench/kernels.py's sweep (bench/results/kernels_h200_vulkan.json, 32768 x 4096): 16 threads a row
    # fastest for bf16 and f16; flat from 32 to 64 for f32.
    matvec_tpr_f32=64,
    matvec_tpr_16bit=16,
    # Half of what an H200 holds resident (132 SMs x 2048 threads). Of 2^16, 2^17 and 2^18 it makes
    # launch_tpr pick the fastest width measured for each decode matvec of Qwen3-Omni and Qwen3-0.6B
    # (bench/kernels.py --decode, bench/results/kernels_decode_h200_vulkan.json).
    launch_threads=2**17,
    # bench/decode_settings.py (bench/results/decode_settings_h200/run4_*): 256 against 512 and 1024 threads,
    # thinker decode 190.9 against 188.6 and 171.0 tok/s in BF16, 233.2 against 218.5 and 217.1 in Q8_0 (fewer,
    # wider workgroups route the token fewer times, but each waits longer on its rows).
    moe_expert_wg=256,
    moe_min_tpr=16,
    # One MoE layer at the thinker's shapes (bench/results/kernels_moe_h200_vulkan.json): per-pair kernels
    # win up to 128 tokens; at 512 grouped takes 0.37 of their time with BF16 experts (3.3 against 8.8 ms).
    # Q8_0 grouped on int8 products (tiles_dot4) ties the per-pair kernels at 128 tokens (1.13 against
    # 1.09 ms) and takes 0.29 of their time at 512 (1.2 against 4.2 ms); 256 lies between.
    moe_grouped_min_tokens=512,
    moe_grouped_min_tokens_q8=256,
    # bench/decode_settings.py --set moe_routed=False (one run): the thinker decodes 197.5 tok/s against 192.1
    # in BF16 and 246.2 against 214.5 in Q8_0 (no quantize_act before down either), though the routed gate_up
    # takes ~5 us longer than gate_up (every workgroup routes before it can load a weight).
    moe_routed=True,
    # bench/kernels.py --latency (per call, with and without subgroups): decode attention at 100 keys 13.1
    # against 14.3 us, moe.route 31.7 against 33.3; norm_rope_append 21.6 against 19.7 (within its noise).
    subgroups=True,
    attention_wg=64,
    attention_combine_wg=256,
    # bench/kernels.py --latency: at 100 keys 256 threads 13.1 us, 128 14.9, 512 14.3 (with subgroups); 512
    # is faster only past the single pass's reach (1000 keys: 35 against 38).
    attention_decode_wg=256,
    # Measured off (bench/decode_settings.py and bench/decode.py --set attention_norm_rope=False, three runs):
    # the fused decode attention's GPU time is below the pair it replaces (thinker Q8_0: decode_q8 22 us
    # against 13 + 8 + 10), yet decode is slower in wall time: thinker Q8_0 233 / 214 tok/s against 251 / 266,
    # BF16 203 against 200, Qwen3-0.6B 502 / 541 against 608 / 542. The cost it adds lies between dispatches,
    # where per-dispatch timestamps (one pass each) do not see it; its cache binding is read_write.
    attention_norm_rope=False,
    # bench/kernels.py --latency (bench/results/kernels_latency_h200_vulkan.json): the single pass costs by
    # the keys present, the split pair by max_len: at 100 keys 13.1 us against 20.2 (the split pair before
    # issue 16: 21.7), at 1000 keys 38 against 24, at 2000 122 against 52. Caches up to 512 rows (at most
    # 512 keys, about the crossing) take the single pass.
    attention_single_max_len=512,
    # Of 64, 128 and 256 keys a slice, 128 was fastest at 4k-32k keys; with short caches 128 leaves a few
    # workgroups running ~77 us each (Qwen3-0.6B decode profile, 136 keys, bench/decode.py), 32 is
    # fastest there (bench/results/kernels_decode_h200_vulkan.json, attention.split vs attention.single).
    attention_split_steps=((2048, 32), (8192, 64)),
    attention_split_long=128,
    attention_flash_min_tokens=FLASH_MIN_TOKENS,
    attention_flash_keys=8,
    row_wg_min=32,
    row_wg_max=256,
    # One workgroup took 236 us for a row of 152k logits; the multi-workgroup top-1 spreads it.
    argmax_split_columns=16384,
    argmax_split_rows=16,
    q8_quant_wg=64,
    q8_matvec_wg=256,
    q8_matvec_rows=4,
    q8_matvec_path="auto",
    # 32 MB of blocks: bandwidth-sized, where a dot4I8Packed that the backend emulates would show.
    q8_choice_shape=(16384, 2048),
    # The two paths time within noise here on an H200 (the weights stay in its 60 MB L2), while the
    # thinker decoded 157 tok/s on dot4 and 130 on f32 (one quantization feeds every projection of an x:
    # bench/results/thinker_h200_vulkan.json); an emulated dot4 is several times slower, still caught.
    q8_f32_margin=0.5,
    # Measured (bench/results/q8_paths_h200_vulkan.json, thinker at the released shapes): x quantized in every
    # workgroup's memory decodes 77.5 tok/s in 485 dispatches a token, the separate quantize_act pass 141.8
    # in 870. The staging costs far more than the dispatch it saves here (moe.down_q8x 62 us a call against
    # down_q8's 13 plus a 6 us quantize), so the H200 keeps the separate pass: 0 turns the fused entries off.
    q8_fuse_max_k=0,
    # The fused entries' width where a table turns them on: 8 threads a row puts 32 rows in a 256-thread
    # workgroup (x's re-read ~1/8 of the weight bytes); launch_tpr widens short launches toward launch_threads.
    q8_fused_min_tpr=8,
    # bench/kernels.py --matmul (bench/results/kernels_matmul_h200_vulkan.json): 512 x 4096 x 2048 in 0.167 ms
    # on int8 products with its quantize pass against 0.486 ms widened to f32 (2.9x); the grouped experts
    # at 512 tokens 1.2 against 3.5 ms (--moe).
    q8_prefill_path="dot4",
    # One workgroup per SM, measured against 0 (no split) in one run each (bench/results/matmul_split_h200/):
    # code2wav's streamed chunk (50-row pre-transformer projections of 16 workgroups) 19.9 -> 15.9 ms, its
    # tiles.main 6.33 -> 1.96 ms plus 0.41 of split_sum; the thinker's BF16 prefill (8 layers) of 64 tokens
    # 2,554 -> 3,234 tok/s, of 512 12,122 -> 12,356. Other targets than 132 not measured.
    matmul_split_below=132,
    # Reasoned, not measured yet: one wide tile per SM of the H200 (132). Below that some SMs get no
    # workgroup while the 64 x 64 tiles, four times as many, would reach every one.
    conv_wide_min_tiles=132,
    # Reasoned, not measured yet: 32 halves the barriers of a reduction (where the adapter's workgroup
    # storage holds 32 KiB), at 16 more registers a thread for the next step's loads than 16 holds.
    conv_wide_k_step=32,
)

# An unknown adapter gets the values measured somewhere rather than values guessed for it: the H200's.
# This is also what lavapipe runs, so the tests' expectations are these values.
DEFAULT = replace(NVIDIA, family="default",
                  basis="no table for this adapter: the NVIDIA H200 measurements (bench/results/*_h200_vulkan.json)")

# Reasoned, not measured, for the Radeon 8060S (Strix Halo, RDNA 3.5): 40 CUs (20 WGPs) of 2 SIMD32 each,
# 16 waves a SIMD, so 1024 resident threads a CU and ~41k in all; waves of 32 or 64 as the driver picks
# (WGSL cannot ask); 64 KB of LDS a workgroup; ~212 GB/s of LPDDR5X shared with the CPU behind a 32 MB
# last-level cache; FP32 ~15 TFLOP/s (single issue). Fields not set here keep the H200's values because
# nothing above argues for another: matvec and MoE threads per row (16 threads x 16 B is two 128-byte
# cache lines a row step on RDNA as on NVIDIA), workgroup sizes of 64-256 (whole waves in either wave
# size; none of these kernels comes near 64 KB of LDS), the argmax split, and the Q8_0 margin. Also the
# decode-latency fields: subgroup reductions (cross-lane DPP / permute on RDNA, as cheap as NVIDIA's
# shuffles; the kernels assume no subgroup size), and the single-pass attention's 256 threads and 2048-row
# reach (its 32 workgroups at the thinker's heads fit 40 CUs as they fit 132 SMs).
AMD_RDNA3 = replace(
    NVIDIA,
    family="amd-rdna3",
    basis="reasoned from RDNA 3.5's limits (Radeon 8060S: 40 CUs, wave32/64, 64 KB LDS, ~212 GB/s), not measured",
    # The H200 rule, half of the resident threads: ~20k, rounded down to a power of two. 2^14 threads with
    # one 16-byte load each keep 256 KB in flight, over the ~100-200 KB that 212 GB/s x ~0.5-1 us needs.
    launch_threads=2**14,
    # Per-pair time grows with the tokens: each pair reads its expert from memory (9.4 MB in BF16, more
    # than the last-level cache holds a few of): ~0.36 ms a token BF16, ~0.19 ms Q8_0 at 212 GB/s.
    # Grouped reads each of the 128 experts once (5.7 ms BF16, 3.0 ms Q8_0) plus tile compute, which ran
    # at ~5% of FP32 peak on the H200: ~0.1 ms a token here at the same efficiency. That crosses at ~20
    # (BF16) and ~35 (Q8_0) tokens; taken 2-4x higher, toward the per-pair path, since the tile kernel's
    # efficiency on RDNA is unmeasured.
    moe_grouped_min_tokens=64,
    moe_grouped_min_tokens_q8=128,
    # The H200's steps keep at least ~8 workgroups (32 heads x slices) per SM at any cache length; with
    # 40 CUs instead of 132 the same holds at a quarter of the length, and longer slices also cut the
    # traffic of the partial results, which costs more at 212 GB/s.
    attention_split_steps=((512, 32), (2048, 64)),
    # A workgroup of 32 fills half a wave wherever the driver compiles compute as wave64, which WGSL
    # cannot prevent; 64 is a whole wave in either wave size.
    row_wg_min=64,
    # Larger than the 32 MB last-level cache (64 MB of int8 + 4 MB of scales), so the timing reads memory
    # as a decode does, at ~0.3 ms a run. Whether dot4I8Packed becomes v_dot4_i32_iu8 depends on naga and
    # the driver, so the path is still measured ("auto").
    q8_choice_shape=(32768, 2048),
    # The H200's rules for wide conv tiles and for splitting a matmul's K, at one workgroup a CU.
    conv_wide_min_tiles=40,
    matmul_split_below=40,
    # q8_fuse_max_k keeps the H200's 0 (the separate quantize pass): the one measurement says the fused
    # entries' staging costs more than a dispatch; RDNA's 64 KB of LDS would hold x (16384 values are ~18
    # KB), so this is the first thing to measure there (bench/q8_paths.py).
    # q8_prefill_path keeps dot4: RDNA 3.5 has v_dot4_i32_iu8 where naga and the driver lower dot4I8Packed
    # to it; unmeasured, like the decode path.
)

TABLES = {t.family: t for t in (NVIDIA, AMD_RDNA3, DEFAULT)}

_NVIDIA_VENDOR_ID, _AMD_VENDOR_ID = 0x10DE, 0x1002
_NVIDIA_NAME = re.compile(r"\bnvidia\b", re.I)
_AMD_NAME = re.compile(r"\b(amd|ati|radeon|radv)\b", re.I)


def family_for(info: dict) -> str:
    """The table family for an adapter, from wgpu's adapter info (vendor_id, vendor, device, description,
    architecture, adapter_type). CPU adapters (lavapipe, llvmpipe, SwiftShader) are "default" whatever
    they name; a GPU is matched by PCI vendor id, or by name where the backend reports no id."""
    if str(info.get("adapter_type", "")).lower() == "cpu":
        return "default"
    vendor_id = info.get("vendor_id")
    names = " ".join(str(info.get(k, "")) for k in ("vendor", "device", "description", "architecture"))
    if vendor_id == _NVIDIA_VENDOR_ID or _NVIDIA_NAME.search(names):
        return "nvidia"
    if vendor_id == _AMD_VENDOR_ID or _AMD_NAME.search(names):
        return "amd-rdna3"
    return "default"


_adapter_family = "default"  # set once, when the device opens
_layers: list[Tuning | dict] = []  # open use() / override() blocks, innermost last
_active = DEFAULT


def _refresh() -> None:
    global _active
    table = TABLES[_adapter_family]
    for layer in _layers:
        table = layer if isinstance(layer, Tuning) else replace(table, **layer)
    _active = table


def current() -> Tuning:
    """The table the ops read: the adapter's family, with any open use() / override() applied."""
    return _active


def adapter_family() -> str:
    """The family chosen for the open adapter ("default" before one opens)."""
    return _adapter_family


def select_for_adapter(info: dict) -> str:
    """Choose the adapter's family (gpu/device.open_gpu calls this once) and return it."""
    global _adapter_family
    _adapter_family = family_for(info)
    _refresh()
    return _adapter_family


@contextmanager
def _layer(layer: Tuning | dict):
    _layers.append(layer)
    try:
        _refresh()
    except BaseException:
        _layers.pop()
        raise
    try:
        yield _active
    finally:
        del _layers[max(i for i, x in enumerate(_layers) if x is layer)]
        _refresh()


def use(family: str):
    """Context manager: `family`'s table in place of the adapter's for the block (yields it)."""
    if family not in TABLES:
        raise ValueError(f"tuning.use: no table {family!r} (one of {', '.join(TABLES)})")
    return _layer(TABLES[family])


def override(**changes):
    """Context manager: the table in use with these fields changed, for the block (yields it)."""
    known = {f.name for f in fields(Tuning)} - {"family", "basis"}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"tuning.override: no field {', '.join(unknown)} (fields: {', '.join(sorted(known))})")
    return _layer(dict(changes))
