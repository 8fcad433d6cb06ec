"""Text to speech at the released shapes, random weights: talker frames per second, real-time factor and time
to first audio, ours on wgpu (BF16, and Q8_0) against Transformers eager BF16 on CUDA, in the same run.

    python bench/speech.py [--thinker-layers 48] [--answer-tokens 20] [--frames 50] [--stream-chunk 4]
                           [--reps 3] [--weights bf16 q8_0] [--hf-device cuda|none] [--shapes released|tiny]
                           [--out FILE]

`--shapes tiny` runs the same measurements on the tiny Omni's shapes: a dry run on a machine without a GPU,
not a figure.

Weights: Transformers builds Qwen3OmniMoeForConditionalGeneration from the released config's shapes (thinker
48 layers of 2048 with 128 experts, talker 20 layers of 1024 with 128 experts, top 6, and a shared expert,
code predictor 5 layers, code2wav as released) with its own initialisation (the talker's fused experts,
which it leaves uninitialised, and its routers, which it zeroes, drawn). Ours reads the same BF16 tensors
(copied to the host once Transformers is measured, so the two never share the GPU), so the codes of the
two sides can be compared too; the Q8_0 run quantizes those tensors as `omni-lab quantize` would (the same
rule, KEEP_AS_STORED included), on the GPU with torch for speed (Q8_0: per 32 weights d = max|x| / 127,
q = round(x / d)).

Both sides greedy, the thinker's answer forced to --answer-tokens tokens and the talker to --frames frames
(a random talker never says its EOS). Measured, medians of --reps after a warm-up:
- thinker: the answer's seconds; talker: frames per second (each frame: the code predictor's 15 steps and
  the talker's step); code2wav: Transformers' chunked_decode of the frames; real-time factor = (thinker +
  talker + code2wav) seconds per second of audio (12.5 frames a second).
- time to first audio: ours streaming (frames to code2wav in chunks of --stream-chunk, Transformers'
  left context of 25), from the call to the first chunk's samples on the host. Transformers' generate
  does not stream: its first audio is the whole call.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from code2wav import StateDictCheckpoint  # noqa: E402
from kernels import emit, median_seconds  # noqa: E402

from omni_lab.formats import omni_names as names  # noqa: E402
from omni_lab.formats.q8_0 import QK, join_q8_0  # noqa: E402
from omni_lab.formats.quantize import target_dtype  # noqa: E402
from omni_lab.gpu import runtime  # noqa: E402
from omni_lab.models.speech import LEFT_CONTEXT, Speech  # noqa: E402

FRAMES_PER_SECOND = 12.5

# The released Qwen3-Omni-30B-A3B-Instruct's ids and talker shapes (transformers' config defaults are not them).
IDS = dict(im_start_token_id=151644, im_end_token_id=151645, tts_pad_token_id=151671, tts_bos_token_id=151672,
           tts_eos_token_id=151673, system_token_id=8948, user_token_id=872, assistant_token_id=77091)
CODEC = dict(codec_pad_id=2148, codec_bos_id=2149, codec_eos_token_id=2150, codec_nothink_id=2155,
             codec_think_bos_id=2156, codec_think_eos_id=2157, speaker_id={"ethan": 2302, "chelsie": 2301})


def released_config(thinker_layers: int):
    from transformers import Qwen3OmniMoeConfig

    rope = lambda section: {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": section,  # noqa: E731
                            "interleaved": True}
    text = dict(vocab_size=152064, hidden_size=2048, intermediate_size=768, num_hidden_layers=thinker_layers,
                num_attention_heads=32, num_key_value_heads=4, head_dim=128, moe_intermediate_size=768,
                num_experts=128, num_experts_per_tok=8, rms_norm_eps=1e-6, rope_parameters=rope([24, 20, 20]),
                max_position_embeddings=65536, eos_token_id=IDS["im_end_token_id"])
    talker_text = dict(vocab_size=3072, hidden_size=1024, intermediate_size=2048, num_hidden_layers=20,
                       num_attention_heads=16, num_key_value_heads=2, head_dim=128, moe_intermediate_size=384,
                       shared_expert_intermediate_size=768, num_experts=128, num_experts_per_tok=6,
                       rms_norm_eps=1e-6, rope_parameters=rope([24, 20, 20]))
    predictor = dict(vocab_size=2048, hidden_size=1024, intermediate_size=3072, num_hidden_layers=5,
                     num_attention_heads=16, num_key_value_heads=8, head_dim=128, num_code_groups=16, rms_norm_eps=1e-6)
    mm = dict(audio_token_id=151646, image_token_id=151655, video_token_id=151656, audio_start_token_id=151647,
              vision_start_token_id=151652)
    thinker = dict(text_config=text, **mm, audio_end_token_id=151648, vision_end_token_id=151653,
                   user_token_id=IDS["user_token_id"])
    talker = dict(text_config=talker_text, code_predictor_config=predictor, num_code_groups=16, thinker_hidden_size=2048,
                  accept_hidden_layer=min(24, thinker_layers), spatial_merge_size=2, **CODEC, **mm)
    return Qwen3OmniMoeConfig(thinker_config=thinker, talker_config=talker, enable_audio_output=True, **IDS)


def tiny_config():
    from omni_lab.models.tiny_omni import omni_config, omni_tokenizer

    return omni_config("tiny", omni_tokenizer()[1])


def prompt_of(cfg, n: int) -> np.ndarray:
    """A chat prompt: a user turn of n random text tokens, then the assistant's header."""
    words = np.random.default_rng(0).integers(1000, 20000, n) % cfg.thinker_config.text_config.vocab_size
    return np.array([cfg.im_start_token_id, cfg.user_token_id, 198 % 300, *words, cfg.im_end_token_id, 198 % 300,
                     cfg.im_start_token_id, cfg.assistant_token_id, 198 % 300], np.int64)


def build_hf(cfg, device: str):
    import torch
    from transformers import Qwen3OmniMoeForConditionalGeneration

    from omni_lab.models.tiny_omni import TALKER_ROUTER_STD

    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = Qwen3OmniMoeForConditionalGeneration._from_config(cfg, attn_implementation="eager",
                                                                  dtype=torch.bfloat16).eval()
    torch.set_default_dtype(torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("talker.") and ".mlp.experts." in name:
                p.normal_(0.0, 0.02)
            elif name.startswith("talker.") and name.endswith(".mlp.gate.weight"):
                p.normal_(0.0, TALKER_ROUTER_STD / 20)  # clear expert choices on unit-scale inputs
    return model


def bench_hf(model, ids: np.ndarray, answer: int, frames: int, reps: int, device: str) -> tuple[dict, np.ndarray]:
    import torch

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    x = torch.as_tensor(ids[None], device=device)
    eos = model.config.im_end_token_id
    got = {}
    original = model.code2wav.chunked_decode

    def catch(codes, *a, **k):  # the codes generate hands code2wav
        got["codes"] = codes
        return original(codes, *a, **k)

    def speak():
        with torch.no_grad():
            got["wav"] = model.generate(x, speaker="Ethan", thinker_max_new_tokens=answer, thinker_min_new_tokens=answer,
                                        thinker_eos_token_id=eos, thinker_do_sample=False,
                                        talker_max_new_tokens=frames + 1, talker_min_new_tokens=frames + 1,
                                        talker_do_sample=False)[1]
        sync()

    def thinker():
        with torch.no_grad():
            model.thinker.generate(x, max_new_tokens=answer, min_new_tokens=answer, do_sample=False, eos_token_id=eos)
        sync()

    def vocode():
        with torch.no_grad():
            original(got["codes"], chunk_size=300, left_context_size=LEFT_CONTEXT)
        sync()

    model.code2wav.chunked_decode = catch
    try:
        total = median_seconds(speak, reps)
    finally:
        del model.code2wav.chunked_decode
    think = median_seconds(thinker, reps)
    voc = median_seconds(vocode, reps)
    talker = total - think - voc
    n = got["codes"].shape[-1]
    return ({"total_s": total, "thinker_s": think, "talker_s": talker, "code2wav_s": voc, "frames": n,
             "talker_frames_per_s": n / talker, "real_time_factor": total / (n / FRAMES_PER_SECOND),
             "first_audio_s": total, "first_audio_note": "generate does not stream: first audio is the whole call",
             "wave_samples": int(got["wav"].numel()), "device": device, "dtype": "bfloat16",
             "attn_implementation": "eager"},
            got["codes"][0].T.cpu().numpy().astype(np.int64))


def live_text_names(state: dict) -> dict:
    """The thinker's text tensors under their transformers 5.2x live paths. Older transformers (5.17 on the GPU
    machine) keep the text model's modules at `thinker.model.*` while already fusing the experts: a layout no
    checkpoint has, which this renames to the live one (fused experts under `thinker.model.language_model.`)."""
    if any(k.startswith(names.LIVE_TEXT) for k in state):
        return state
    text = tuple(names.CKPT_TEXT + p for p in ("layers.", "embed_tokens.", "norm."))
    return {names.LIVE_TEXT + k[len(names.CKPT_TEXT):] if k.startswith(text) else k: v for k, v in state.items()}


class Q8Checkpoint(StateDictCheckpoint):
    """The state dict as `omni-lab quantize` would store it (formats/quantize.py's target_dtype), quantized
    to Q8_0 on the GPU with torch when read."""

    def __init__(self, state: dict, config: dict, device: str):
        super().__init__(state, "", config)
        self.device = device

    def dtype(self, name: str) -> str:
        t = self._t[name]
        return "q8_0" if target_dtype(name, tuple(t.shape), "bf16") == "q8_0" else "bf16"

    def get(self, name: str):
        import torch

        if self.dtype(name) != "q8_0":
            return super().get(name)
        x = self._t[name].to(self.device, torch.float32)
        blocks = x.reshape(*x.shape[:-1], x.shape[-1] // QK, QK)
        d = blocks.abs().amax(-1, keepdim=True) / 127
        q = torch.where(d > 0, torch.round(blocks / d), torch.zeros_like(blocks)).to(torch.int8)
        q = q.reshape(x.shape).cpu().numpy()
        scales = d.squeeze(-1).to(torch.float16).cpu().numpy()
        return join_q8_0(q, scales), "q8_0"


def bench_ours(speech: Speech, ids: np.ndarray, answer: int, frames: int, chunk: int, reps: int) -> tuple[dict, np.ndarray]:
    rt = runtime()
    result = {}

    def speak():
        result["r"] = speech.speak(ids, max_new_tokens=answer, max_frames=frames)

    def thinker():
        speech.thinker.generate(ids, answer, stop_at_eos=False)

    def vocode():
        speech.vocode(result["r"].codes)

    think = median_seconds(thinker, reps)
    total_speak = median_seconds(speak, reps)  # thinker + talker prompt + frames
    voc = median_seconds(vocode, reps)
    r = result["r"]
    talker = total_speak - think

    def first_audio() -> float:
        t0 = time.perf_counter()
        for _ in speech.code2wav.stream(speech.frames(ids, max_new_tokens=answer, max_frames=frames), chunk, LEFT_CONTEXT):
            return time.perf_counter() - t0
        return float("nan")

    first_audio()  # records the chunk's plan
    first = statistics.median(first_audio() for _ in range(reps))
    plan = speech.talker._plans[("frame", None)]
    with rt.profile() as prof:
        rt.replay(plan, ())
    frame_gpu = sum(t.seconds for t in prof.timings)
    audio_s = len(r.codes) / FRAMES_PER_SECOND
    return ({"total_s": total_speak + voc, "thinker_s": think, "talker_s": talker, "code2wav_s": voc,
             "frames": len(r.codes), "talker_frames_per_s": len(r.codes) / talker,
             "real_time_factor": (total_speak + voc) / audio_s, "first_audio_s": first, "stream_chunk": chunk,
             "first_frame_s": r.first_frame_s, "frame_dispatches": len(plan), "frame_gpu_s": frame_gpu,
             "clock": prof.clock, "frame_gpu_s_by_kernel": dict(sorted(prof.by_kernel().items(), key=lambda kv: -kv[1])[:10]),
             "adapter": rt.gpu.describe()["adapter"]}, r.codes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--thinker-layers", type=int, default=48)
    ap.add_argument("--answer-tokens", type=int, default=20)
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--stream-chunk", type=int, default=4, help="frames of code2wav's first streamed chunk")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--weights", nargs="+", choices=("bf16", "q8_0"), default=["bf16", "q8_0"])
    ap.add_argument("--hf-device", default="cuda", help="cuda, cpu, or none to skip Transformers")
    ap.add_argument("--shapes", choices=("released", "tiny"), default="released")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import torch

    cfg = tiny_config() if args.shapes == "tiny" else released_config(args.thinker_layers)
    ids = prompt_of(cfg, 16)
    # The random weights are made by Transformers on this device even without its run: on the CPU, 35B
    # parameters take minutes (two runs on the H200 timed out there), so a GPU builds them where there is one.
    device = args.hf_device if args.hf_device != "none" else ("cuda" if torch.cuda.is_available() else "cpu")
    report = {"bench": "speech", "shapes": args.shapes, "thinker_layers": cfg.thinker_config.text_config.num_hidden_layers,
              "answer_tokens": args.answer_tokens, "frames": args.frames, "audio_s": args.frames / FRAMES_PER_SECOND,
              "prompt_tokens": len(ids), "reps": args.reps, "greedy": True,
              "weights": "random (Transformers' init; talker experts and routers drawn), the same BF16 tensors on both sides"}
    t0 = time.perf_counter()
    model = build_hf(cfg, device)
    report["hf_build_s"] = time.perf_counter() - t0
    hf_codes = None
    if args.hf_device != "none":
        report["transformers"], hf_codes = bench_hf(model, ids, args.answer_tokens, args.frames, args.reps, device)
        emit(report, args.out)  # a partial report survives a later time-out
    # Ours reads the same tensors from the host: Transformers' copy leaves the GPU first.
    state = live_text_names({k: v.to("cpu") for k, v in model.state_dict().items()})
    config = model.config.to_dict()
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    for weights in args.weights:
        ckpt = StateDictCheckpoint(state, "", config) if weights == "bf16" else Q8Checkpoint(state, config, device)
        t0 = time.perf_counter()
        speech = Speech(ckpt, max_len=len(ids) + args.answer_tokens + args.frames + 32, progress=True)
        load_s = time.perf_counter() - t0
        ours, codes = bench_ours(speech, ids, args.answer_tokens, args.frames, args.stream_chunk, args.reps)
        ours["load_s"] = load_s
        if hf_codes is not None:
            n = min(len(codes), len(hf_codes))
            ours["codes_equal_to_transformers_per_codebook"] = (codes[:n] == hf_codes[:n]).mean(axis=0).round(3).tolist()
            hf = report["transformers"]
            for k in ("talker_frames_per_s",):
                ours[f"{k}_vs_transformers"] = ours[k] / hf[k]
            ours["real_time_factor_vs_transformers"] = hf["real_time_factor"] / ours["real_time_factor"]
        report[f"ours_wgpu_{weights}"] = ours
        emit(report, args.out)
        speech = None
        gc.collect()


if __name__ == "__main__":
    main()
