"""Real-time factor of the code2wav vocoder at the released shapes: ours on wgpu (BF16 weights, f32 math)
against Transformers eager BF16 on CUDA, the same weights, in the same run.

    python bench/code2wav.py [--seconds 30] [--chunk 25] [--left-context 25] [--reps 5] [--hf-device cuda|none]
                             [--shapes released|tiny] [--convs] [--tuning FIELD=VALUE ...] [--out FILE]

`--shapes tiny` runs the same measurements on the tiny vocoder's shapes: a dry run of the script on a
machine without a GPU, not a figure.

Weights: Transformers builds Qwen3OmniMoeCode2Wav from its default config (the released shapes: 8
sliding-window layers of 1024, upsampling 2 x 2, decoder blocks 8, 5, 4, 3 from 1536 channels: 1920
samples a frame) with its own initialisation, and with the parameters it leaves at identities or zeros
(LayerScale, ConvNeXt gamma, SnakeBeta) drawn as the tiny checkpoints draw them, so the modules do work;
both sides then read the same BF16 tensors. So the waveforms can be compared too: ours against
Transformers in float32 on the same weights (`snr_vs_transformers_fp32_db`; streamed, against its
chunked_decode: `stream_snr_vs_transformers_chunked_decode_fp32_db`).

Measured, each the median of --reps runs after a warm-up:
- one-shot: one forward over --seconds of codes (12.5 frames a second); real-time factor = compute seconds
  per audio second.
- streaming: chunks of --chunk frames with --left-context frames before each (chunked_decode's cut); per
  chunk after the first, the seconds per chunk, per frame (the Qwen3-Omni report's bar: 3 ms of GPU a
  frame) and the real-time factor; the first chunk's latency (codes to its audio). Both sides are timed
  the same way: each chunk on its own (Transformers' module called on each window as its chunked_decode
  cuts them, synchronised), the median over the later chunks of --reps passes. Ours crops the context
  out of the decoder blocks where no kept sample reads it (Code2Wav.crops); `uncropped_chunk_s` is the same
  chunk decoded whole, as Transformers decodes it, for what that saves.
Ours: wall clock (what a caller waits for, read-back included) and GPU time from timestamp queries of one
replayed forward (each dispatch in its own timed pass, which overstates the total a little).

`--convs` times only the vocoder's convolutions, each on its own (random inputs, BF16 weights, no model
built, no Transformers run): every conv of one forward over --seconds of frames and over one streamed chunk
(--chunk + --left-context frames), in execution order, with its kernel, GPU seconds (median of --reps),
GFLOP/s (2 C_in C_out K per output step of conv1d, per input step of the transpose: padding taps counted,
a depthwise conv's C_in is 1) and the NMSE of a sample of its outputs (8 rows, the first 8192 steps)
against the numpy reference; then the totals by kernel entry and K, and ms per frame (one-shot: per frame
decoded; the chunk: per new frame, --chunk, as `stream_gpu_ms_per_frame` counts it). The shapes are
checked against Transformers' module built on the meta device. Each conv's inputs stay in the GPU's cache
between reps where they fit (the small streamed ones do), which a forward does not give them.

`--tuning FIELD=VALUE` (repeatable) changes a field of the adapter's tuning table for the run, and the
report says so (`tuning_overrides`): e.g. `conv_wide_min_tiles=0` puts every conv of more than 64 output
channels on the wide 128 x 128 tiles, `conv_wide_min_tiles=1000000` every one on the 64 x 64 tiles,
`conv_wide_k_step=16` the wide tiles on 16 kk a step.
"""

from __future__ import annotations

import argparse
import ast
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernels import emit, median_seconds, profiles  # noqa: E402

from omni_lab.formats.safetensors_io import CheckpointError  # noqa: E402
from omni_lab.gpu import bf16_to_f32, runtime, tuning  # noqa: E402
from omni_lab.models.code2wav import DILATIONS, PREFIX, Code2Wav, Code2WavConfig, chunk_windows  # noqa: E402
from omni_lab.ops import conv  # noqa: E402
from omni_lab.ops.registry import nmse  # noqa: E402

FRAMES_PER_SECOND = 12.5


class StateDictCheckpoint:
    """The checkpoint reader interface over a torch module's BF16 state dict, keys under `prefix`."""

    def __init__(self, state: dict, prefix: str, config: dict):
        self.path = Path("<random weights>")
        self.config = config
        self._t = {f"{prefix}{k}": v for k, v in state.items()}

    @property
    def names(self) -> list[str]:
        return list(self._t)

    def __contains__(self, name: str) -> bool:
        return name in self._t

    def expect(self, name: str, shape) -> None:
        if name not in self._t:
            raise CheckpointError(f"{self.path}: tensor '{name}' is missing")
        if tuple(self._t[name].shape) != tuple(shape):
            raise CheckpointError(f"{self.path}: tensor '{name}' has shape {tuple(self._t[name].shape)}, expected {tuple(shape)}")

    def dtype(self, name: str) -> str:
        return "bf16"

    def get(self, name: str):
        import torch

        return self._t[name].contiguous().view(torch.int16).numpy().view(np.uint16), "bf16"

    def get_f32(self, name: str) -> np.ndarray:
        return bf16_to_f32(self.get(name)[0])


def snr_db(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(10 * np.log10(np.sum(ref ** 2) / max(np.sum((ours - ref) ** 2), 1e-300)))


def stream_times(model: Code2Wav, codes: np.ndarray, chunk: int, left: int) -> tuple[float, list[float]]:
    """(the first chunk's latency, the seconds of each later chunk) of one streaming pass over codes."""
    times, t0 = [], time.perf_counter()
    for _ in model.stream(iter(codes.T), chunk, left):  # frames arrive one at a time
        t1 = time.perf_counter()
        times.append(t1 - t0)
        t0 = t1
    return times[0], times[1:]


def bench_ours(model: Code2Wav, codes: np.ndarray, seconds: float, chunk: int, left: int, reps: int) -> dict:
    rt = runtime()
    one_shot = median_seconds(lambda: model.forward(codes), reps)
    gpu, by_kernel, dispatches, clock = gpu_profile(model, ("forward", codes.shape[1], 0))
    stream_times(model, codes, chunk, left)  # records the chunk shapes' plans
    passes = [stream_times(model, codes, chunk, left) for _ in range(reps)]
    first = statistics.median(p[0] for p in passes)
    per_chunk = statistics.median(t for p in passes for t in p[1])
    chunk_gpu, chunk_by_kernel, chunk_dispatches, _ = gpu_profile(model, ("forward", chunk + left, left * model.cfg.samples_per_frame))
    # The same chunk decoded whole (as Transformers does), its context's samples dropped after: what the crops save.
    window = codes[:, :chunk + left]
    whole = median_seconds(lambda: model.forward(window), reps)
    whole_gpu = gpu_profile(model, ("forward", chunk + left, 0))[0]
    chunk_audio = chunk / FRAMES_PER_SECOND
    return {"one_shot_s": one_shot, "one_shot_rtf": one_shot / seconds, "one_shot_gpu_s": gpu,
            "one_shot_gpu_rtf": gpu / seconds, "one_shot_dispatches": dispatches, "clock": clock,
            "one_shot_gpu_s_by_kernel": by_kernel,
            "stream_first_chunk_s": first, "stream_chunk_s": per_chunk, "stream_rtf": per_chunk / chunk_audio,
            "stream_ms_per_frame": 1e3 * per_chunk / chunk, "stream_chunk_gpu_s": chunk_gpu,
            "stream_gpu_ms_per_frame": 1e3 * chunk_gpu / chunk, "stream_chunk_dispatches": chunk_dispatches,
            "stream_chunk_gpu_s_by_kernel": chunk_by_kernel,
            "uncropped_chunk_s": whole, "uncropped_chunk_gpu_s": whole_gpu,
            "adapter": rt.gpu.describe()["adapter"]}


def gpu_profile(model: Code2Wav, key: tuple) -> tuple[float, dict, int, str]:
    """GPU seconds of one replay of a recorded forward, the 12 costliest kernels, its dispatches, the clock."""
    rt = runtime()
    plan = model._plans[key]
    with rt.profile() as prof:
        rt.replay(plan, ())
    by_kernel = dict(sorted(prof.by_kernel().items(), key=lambda kv: -kv[1])[:12])
    return sum(t.seconds for t in prof.timings), by_kernel, len(plan), prof.clock


def bench_hf(module, codes: np.ndarray, seconds: float, chunk: int, left: int, reps: int, device: str) -> dict:
    import torch

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    c = torch.as_tensor(codes[None], device=device)

    def run(fn):
        with torch.no_grad():
            out = fn()
        sync()
        return out

    one_shot = median_seconds(lambda: run(lambda: module(c)), reps)

    def stream_pass() -> list[float]:
        """chunked_decode's loop, each chunk's call timed on its own (synchronised): its seconds per chunk."""
        times = []
        for first_frame, start, end in chunk_windows(codes.shape[1], chunk, left):
            t0 = time.perf_counter()
            run(lambda: module(c[..., first_frame:end]))
            times.append(time.perf_counter() - t0)
        return times

    stream_pass()  # warm-up
    passes = [stream_pass() for _ in range(reps)]
    first = statistics.median(p[0] for p in passes)
    per_chunk = statistics.median(t for p in passes for t in p[1:])  # the later chunks, each chunk + left frames
    return {"one_shot_s": one_shot, "one_shot_rtf": one_shot / seconds, "stream_first_chunk_s": first,
            "stream_chunk_s": per_chunk, "stream_rtf": per_chunk / (chunk / FRAMES_PER_SECOND),
            "stream_ms_per_frame": 1e3 * per_chunk / chunk, "device": device, "dtype": "bfloat16",
            "attn_implementation": "eager"}


def conv_shapes(cfg: Code2WavConfig, frames: int) -> list[dict]:
    """Every convolution of one code2wav forward over `frames` frames, in execution order, each named by its
    module path under code2wav: C_in, C_out, T_in, K, stride, dilation, groups, transposed, residual."""
    h, ch = cfg.hidden_size, cfg.decoder_channels
    one = dict(stride=1, dilation=1, groups=1, transposed=False, residual=False)
    out, t = [], frames
    for i, f in enumerate(cfg.upsampling_ratios):
        out.append({**one, "name": f"upsample.{i}.0", "c_in": h, "c_out": h, "t": t, "k": f, "stride": f, "transposed": True})
        t = conv.transposed_length(t, f, f)
        out.append({**one, "name": f"upsample.{i}.1.dwconv", "c_in": h, "c_out": h, "t": t, "k": 7, "groups": h})
    out.append({**one, "name": "decoder.0", "c_in": h, "c_out": ch[0], "t": t, "k": 7})
    for b, r in enumerate(cfg.upsample_rates):
        name = f"decoder.{b + 1}.block"
        out.append({**one, "name": f"{name}.1", "c_in": ch[b], "c_out": ch[b + 1], "t": t, "k": 2 * r, "stride": r,
                    "transposed": True})
        t = conv.transposed_length(t, 2 * r, r)
        for j, d in enumerate(DILATIONS):
            c = ch[b + 1]
            out.append({**one, "name": f"{name}.{j + 2}.conv1", "c_in": c, "c_out": c, "t": t, "k": 7, "dilation": d})
            out.append({**one, "name": f"{name}.{j + 2}.conv2", "c_in": c, "c_out": c, "t": t, "k": 1, "residual": True})
    out.append({**one, "name": f"decoder.{len(cfg.upsample_rates) + 2}", "c_in": ch[-1], "c_out": 1, "t": t, "k": 7})
    return out


def check_conv_shapes(hf_cfg, shapes: list[dict]) -> None:
    """Each conv's weight shape is Transformers' own (its module built on the meta device: no memory)."""
    import torch
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeCode2Wav

    with torch.device("meta"):
        params = dict(Qwen3OmniMoeCode2Wav._from_config(hf_cfg).named_parameters())
    for c in shapes:
        want = ((c["c_in"], c["c_out"], c["k"]) if c["transposed"] else (c["c_out"], c["c_in"] // c["groups"], c["k"]))
        got = tuple(params[f"{c['name']}.conv.weight"].shape)
        assert got == want, f"{c['name']}: Transformers' weight is {got}, conv_shapes says {want}"


CHECK_STEPS = 8192  # outputs of each sampled row checked against the reference (float64 numpy is slow at 720k)


def bench_conv(c: dict, reps: int, rng) -> dict:
    """One conv of conv_shapes on random inputs and BF16 weights: its GPU time, GFLOP/s, and the NMSE of up to
    8 of its output rows (spread over the channel tiles, the last included), their first CHECK_STEPS
    outputs, against the numpy reference."""
    rt = runtime()
    x = rng.standard_normal((c["c_in"], c["t"]), dtype=np.float32)
    shape = (c["c_in"], c["c_out"], c["k"]) if c["transposed"] else (c["c_out"], c["c_in"] // c["groups"], c["k"])
    host, seen = conv._stored(rng, shape, "bf16")  # seen: the f32 values of the stored bf16 weights
    b = rng.standard_normal(c["c_out"], dtype=np.float32)
    xt, wt, bt = rt.upload(x), rt.upload(host, "bf16"), rt.upload(b)
    if c["transposed"]:
        t_out = conv.transposed_length(c["t"], c["k"], c["stride"])
        run = lambda: conv.conv_transpose1d(xt, wt, bt, stride=c["stride"], out=y)  # noqa: E731
        steps = c["t"]
    else:
        t_out = conv.causal_padding(c["t"], c["k"], c["stride"], c["dilation"])[2]
        r = rng.standard_normal((c["c_out"], t_out), dtype=np.float32) if c["residual"] else None
        res = rt.upload(r) if r is not None else None
        run = lambda: conv.conv1d(xt, wt, bt, stride=c["stride"], dilation=c["dilation"], groups=c["groups"],  # noqa: E731
                                  residual=res, out=y)
        steps = t_out
    y = rt.empty((c["c_out"], t_out))
    got = run().numpy()
    # The reference on a sample of rows and the first n outputs, from the prefix of x those outputs read
    # (causal: conv1d's output t reads x up to t S + S - 1; the transpose's up to (t + K - S) / S).
    rows = np.unique(np.linspace(0, c["c_out"] - 1, min(8, c["c_out"])).round().astype(int))
    n = min(t_out, CHECK_STEPS)
    if c["transposed"]:
        xs = x[:, :(n + c["k"] - c["stride"]) // c["stride"] + 1]
        want = conv.conv_transpose1d_ref(xs, seen[:, rows], b[rows], stride=c["stride"])[:, :n]
    else:
        g = c["groups"] > 1  # depthwise: row o reads input channel o alone
        xs = (x[rows] if g else x)[:, :n * c["stride"]]
        want = conv.conv1d_ref(xs, seen[rows], b[rows], stride=c["stride"], dilation=c["dilation"],
                               groups=len(rows) if g else 1, residual=None if r is None else r[rows, :n])
    profs = profiles(run, reps)
    secs = statistics.median(sum(t.seconds for t in p.timings) for p in profs)
    flops = 2 * (c["c_in"] // c["groups"]) * c["c_out"] * c["k"] * steps
    return {**c, "t_out": t_out, "kernels": sorted(profs[0].by_kernel()), "seconds": secs, "flops": flops,
            "gflop_per_s": flops / secs / 1e9, "nmse_sampled": float(nmse(got[rows, :n], want)),
            "clock": profs[0].clock}


def bench_convs(cfg: Code2WavConfig, frames: int, per_frame: int, reps: int) -> dict:
    """Every conv of a forward over `frames` frames (bench_conv), the totals by kernel entry and K, and the
    total in ms per frame of `per_frame` frames."""
    rng = np.random.default_rng(0)
    results = [bench_conv(c, reps, rng) for c in conv_shapes(cfg, frames)]
    by_kind: dict[str, float] = {}
    for r in results:
        kind = f"{'+'.join(k.split('[')[0] for k in r['kernels'])} K={r['k']}"
        by_kind[kind] = by_kind.get(kind, 0.0) + r["seconds"]
    total = sum(r["seconds"] for r in results)
    return {"frames": frames, "convs": results, "seconds_by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
            "total_s": total, "ms_per_frame": 1e3 * total / per_frame, "per_frame_of": per_frame,
            "worst_nmse": max(r["nmse_sampled"] for r in results)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--chunk", type=int, default=25)
    ap.add_argument("--left-context", type=int, default=25)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--hf-device", default="cuda", help="cuda, cpu, or none to skip Transformers")
    ap.add_argument("--shapes", choices=("released", "tiny"), default="released")
    ap.add_argument("--convs", action="store_true",
                    help="only the convolutions, each timed on its own: one-shot over --seconds and one streamed chunk")
    ap.add_argument("--tuning", action="append", default=[], metavar="FIELD=VALUE",
                    help="a field of the tuning table changed for the run (repeatable), e.g. conv_wide_min_tiles=0")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    overrides = {}
    for item in args.tuning:
        field, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--tuning takes FIELD=VALUE, got {item!r}")
        overrides[field] = ast.literal_eval(value)
    with tuning.override(**overrides):  # on top of the adapter's table, whenever the device opens
        run(args, overrides)


def run(args, overrides: dict) -> None:
    import torch
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeCode2WavConfig
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeCode2Wav

    from omni_lab.models.tiny_omni import CODE2WAV_PRESETS, draw_code2wav

    hf_cfg = Qwen3OmniMoeCode2WavConfig(**(CODE2WAV_PRESETS["tiny"] if args.shapes == "tiny" else {}))
    if args.convs:
        cfg = Code2WavConfig.from_dict({"model_type": "qwen3_omni_moe", "code2wav_config": hf_cfg.to_dict()}, "defaults")
        frames, chunk = int(round(args.seconds * FRAMES_PER_SECOND)), args.chunk + args.left_context
        check_conv_shapes(hf_cfg, conv_shapes(cfg, frames))
        rt = runtime()
        emit({"bench": "code2wav.convs", "shapes": args.shapes, "adapter": rt.gpu.describe()["adapter"],
              "tuning": rt.gpu.tuning, "tuning_overrides": overrides, "seconds": frames / FRAMES_PER_SECOND,
              "reps": args.reps, "weights": "random, BF16",
              "one_shot": bench_convs(cfg, frames, frames, args.reps),
              "stream_chunk": bench_convs(cfg, chunk, args.chunk, args.reps)}, args.out)
        return
    torch.manual_seed(0)
    module = Qwen3OmniMoeCode2Wav._from_config(hf_cfg, attn_implementation="eager").eval()
    draw_code2wav(module, seed=0)
    # The float32 reference holds the BF16 weights both sides read, but keeps its rotary inv_freq in float32:
    # module.to(bfloat16) rounds that buffer too (1/10000^(2/64) becomes 0.75), which alone costs the
    # transformer 60 dB of agreement at 16 frames.
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    config = {"model_type": "qwen3_omni_moe", "code2wav_config": hf_cfg.to_dict()}
    cfg = Code2WavConfig.from_dict(config, "released defaults")
    frames = int(round(args.seconds * FRAMES_PER_SECOND))
    seconds = frames / FRAMES_PER_SECOND
    codes = np.random.default_rng(0).integers(0, cfg.codebook_size, (cfg.num_quantizers, frames), dtype=np.int64)
    report = {"bench": "code2wav", "shapes": args.shapes, "tuning_overrides": overrides, "seconds": seconds, "frames": frames, "chunk": args.chunk,
              "left_context": args.left_context, "reps": args.reps, "samples_per_frame": cfg.samples_per_frame,
              "weights": "random (Transformers' init, LayerScale / gamma / SnakeBeta drawn), BF16"}

    t0 = time.perf_counter()
    ckpt = StateDictCheckpoint({k: v.to(torch.bfloat16) for k, v in module.named_parameters()}, f"{PREFIX}.", config)
    ours = Code2Wav(cfg, ckpt, max_len=max(frames, args.chunk + args.left_context), progress=True)
    report["ours_load_s"] = time.perf_counter() - t0
    report["ours_wgpu_bf16"] = bench_ours(ours, codes, seconds, args.chunk, args.left_context, args.reps)
    wave = ours.forward(codes)[PREFIX]

    if args.hf_device != "none":
        import copy

        hf = copy.deepcopy(module).to(args.hf_device, torch.bfloat16)  # as people run it
        report["transformers"] = bench_hf(hf, codes, seconds, args.chunk, args.left_context, args.reps, args.hf_device)
        del hf
        # float32 for real: PyTorch's CUDA convolutions run in TF32 unless told not to
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        with torch.no_grad():
            ref = module.to(args.hf_device)(torch.as_tensor(codes[None], device=args.hf_device)).reshape(-1).cpu().numpy()
        report["snr_vs_transformers_fp32_db"] = snr_db(wave, ref)
        with torch.no_grad():  # the streamed chunks (ours cropped) against Transformers' chunked_decode
            ref = module.chunked_decode(torch.as_tensor(codes[None], device=args.hf_device), chunk_size=args.chunk,
                                        left_context_size=args.left_context).reshape(-1).cpu().numpy()
        report["stream_snr_vs_transformers_chunked_decode_fp32_db"] = snr_db(ours.chunked_decode(codes, args.chunk, args.left_context), ref)
        o, h = report["ours_wgpu_bf16"], report["transformers"]
        report["speedup_one_shot"] = h["one_shot_s"] / o["one_shot_s"]
        report["speedup_stream_chunk"] = h["stream_chunk_s"] / o["stream_chunk_s"]
    emit(report, args.out)


if __name__ == "__main__":
    main()
