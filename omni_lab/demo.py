"""`omni-lab demo`: the main job on the tiny built-in models, as a list of steps.

Each step is a function of the shared `Demo` state, run in the order of `STEPS`; a step records what it
found under `demo.summary` and prints as it goes. Adding a part of the demo (quantization, speech) is adding
a function and one entry to `STEPS`. The closing lines (where the reports are, one line per model) are
printed by `run_demo` after the last step, from `summary["models"]`.

The helpers at the end (`ensure_tiny`, `reference_for`, `markdown_table`) are shared with the notebooks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import OmniLabError

DEFAULT_PROMPT = "Hello, world! How are you today?"
# (name, preset, seed) of the tiny checkpoints; the name is also the directory under <work_dir>/models/.
TINY_MODELS = (("tiny", "tiny", 0), ("tiny-gqa", "tiny-gqa", 1))
# Runs of the notebooks and the demo go here unless told otherwise (gitignored), like reference_data/.
RUNS_ROOT = Path(__file__).resolve().parents[1] / "runs"
# Below this gap between HF's two best logits, greedy decoding may pick either token: a tie, not a bug.
NEAR_TIE = 1e-4


class DemoError(OmniLabError, RuntimeError):
    """A demo step found something wrong that later steps would only obscure (a failing kernel)."""


@dataclass
class Demo:
    """What the steps share: their settings, the models they work on, and the summary they fill in."""

    work_dir: Path
    quick: bool = False
    prompt: str = DEFAULT_PROMPT
    dtype: str = "float32"
    reference_root: Path | None = None  # None: reference_data/ of the package
    max_new_tokens: int = 12
    models: dict[str, Path] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    say: Callable[[str], None] = print

    def model_summary(self, name: str) -> dict:
        return self.summary.setdefault("models", {}).setdefault(name, {})

    def heading(self, text: str) -> None:
        self.say(f"\n== {text}")


# ---------------------------------------------------------------------------------------------- steps

def adapter_step(demo: Demo) -> None:
    from .gpu import runtime

    info = runtime().gpu.describe()
    demo.summary["adapter"] = info
    demo.say(f"adapter   {info['adapter']} ({info['description']})")
    demo.say(f"backend   {info['backend']}, type {info['adapter_type']}, vendor {info['vendor']}")
    demo.say(f"features  {', '.join(info['features']) or 'none of shader-f16, subgroup, timestamp-query'}")
    limits = info["limits"]
    for key in ("max-storage-buffer-binding-size", "max-buffer-size", "max-compute-workgroup-storage-size",
                "max-compute-invocations-per-workgroup"):
        if key in limits:
            demo.say(f"  {key:40s} {limits[key]:>14,}")
    if info["adapter_type"] == "CPU":
        demo.say("note      a software adapter (lavapipe): correct, but slow; use a GPU for speed")


def selfcheck_step(demo: Demo) -> None:
    from .ops.selfcheck import entry_point_report, run_selfcheck

    results = run_selfcheck()
    for r in results:
        demo.say(f"{'ok  ' if r.ok else 'FAIL'} {r.op:28s} nmse {r.nmse:9.2e} (bound {r.bound:.0e})  "
                 f"{r.seconds * 1e3:7.1f} ms")
    failed = [r for r in results if not r.ok]
    demo.summary["selfcheck"] = [{"op": r.op, "nmse": r.nmse, "bound": r.bound, "ok": r.ok} for r in results]
    if failed:
        # A model built on a wrong kernel diverges everywhere after it; the kernel is the thing to fix.
        raise DemoError(f"{len(failed)} of {len(results)} kernel checks do not match their numpy reference on this "
                        f"adapter: {', '.join(r.op for r in failed)}")
    points = entry_point_report(results)
    unchecked = [p["kernel"] for p in points if p["case"] is None]
    if unchecked:
        raise DemoError(f"no selfcheck case exercises {', '.join(unchecked)}")
    demo.say(f"{len(points)} of {len(points)} entry points checked: {len(results)} cases match their numpy reference")


def models_step(demo: Demo) -> None:
    chosen = TINY_MODELS[:1] if demo.quick else TINY_MODELS
    for name, preset, seed in chosen:
        t0 = time.perf_counter()
        path = demo.work_dir / "models" / name
        built = not (path / "config.json").is_file()
        ensure_tiny(path, preset, seed)
        demo.models[name] = path
        demo.model_summary(name)["path"] = str(path)
        demo.say(f"{name:10s} {'built' if built else 'found'} {path}"
                 + (f" ({time.perf_counter() - t0:.1f} s)" if built else "")
                 + " (random weights: the point is that ours and Transformers agree, not what it says)")


def compare_step(demo: Demo) -> None:
    from .workbench import compare_model, prompt_ids

    for name, path in demo.models.items():
        ids = prompt_ids(path, prompt=demo.prompt)
        out = demo.work_dir / name
        comparison, index, timing = compare_model(path, ids, out, dtype=demo.dtype, root=demo.reference_root)
        compared = [r for r in comparison.rows if r.compared and math.isfinite(r.cosine)]
        worst = min(compared, key=lambda r: r.cosine) if compared else None
        fd = comparison.first_divergence
        demo.say(f"{name}: {comparison.summary()}")
        demo.say(f"  reference {comparison.manifest.get('name', '?')}, report {index}")
        s = demo.model_summary(name)
        s.update(passed=comparison.passed, report=str(index), activations=len(compared),
                 worst_cosine=worst.cosine if worst else None, worst_cosine_at=worst.name if worst else None,
                 first_divergence=fd.name if fd else None, compare_s=sum(timing.values()), timing=timing)


def generate_step(demo: Demo) -> None:
    import torch

    from .reference import load_hf_model
    from .workbench import load_ours, prompt_ids, tokenizer_for

    n = 4 if demo.quick else demo.max_new_tokens
    for name, path in demo.models.items():
        ids = prompt_ids(path, prompt=demo.prompt)
        tok = tokenizer_for(path)
        t0 = time.perf_counter()
        ours = load_ours(path, max_len=len(ids) + n, progress=False).generate(ids, n)
        seconds = time.perf_counter() - t0
        hf = load_hf_model(path, demo.dtype)
        with torch.no_grad():
            out = hf.generate(torch.as_tensor(ids[None]), max_new_tokens=n, do_sample=False, output_scores=True,
                              return_dict_in_generate=True)
        theirs = out.sequences[0, len(ids):].tolist()
        step = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b),
                    None if len(ours) == len(theirs) else min(len(ours), len(theirs)))
        near_tie = False
        if step is None:
            verdict = "same tokens"
        else:
            top2 = torch.topk(out.scores[step][0].float(), 2).values if step < len(out.scores) else None
            gap = float(top2[0] - top2[1]) if top2 is not None else math.inf
            near_tie = gap < NEAR_TIE
            verdict = f"differ from step {step}" + (f" at a near tie (HF's top-2 logit gap {gap:.1e}): either is right"
                                                    if near_tie else f" (HF's top-2 logit gap {gap:.3g}): a bug")
        demo.say(f"{name}: greedy continuation of {demo.prompt!r} ({n} tokens, ours in {seconds:.2f} s; random "
                 "weights, so the text is gibberish by design)")
        demo.say(f"  ours         {ours}  {tok.decode(ours)!r}")
        demo.say(f"  Transformers {theirs}  {tok.decode(theirs)!r}")
        demo.say(f"  {verdict}")
        demo.model_summary(name).update(tokens_ours=ours, tokens_hf=theirs, tokens_match=step is None,
                                        tokens_ok=step is None or near_tie, generate_s=seconds)


# The tiny Qwen3-Omni whose vocoder the demo runs, and the codes it decodes: seconds of random codec frames.
TINY_OMNI = ("omni-tiny", "tiny", 0)
VOCODER_SECONDS = 2.0
# What the tiny Omni is asked to say, and the length of its answer (the first test the original team set).
SPEECH_PROMPT, SPEECH_TOKENS = "Привет мир", 8


def vocoder_step(demo: Demo) -> None:
    """code2wav of the tiny Omni on our kernels against Transformers, module by module, on random codes;
    ours is written as a wav beside the report, which plays both."""
    from .models.code2wav import PREFIX, SAMPLE_RATE
    from .report.audio import write_wav
    from .workbench import compare_model, load_ours

    name, preset, seed = TINY_OMNI
    path = demo.work_dir / "models" / name
    built = not (path / "config.json").is_file()
    ensure_tiny_omni(path, preset, seed)
    demo.say(f"{name:10s} {'built' if built else 'found'} {path} (random weights: its speech is noise)")
    vocoder = load_ours(path, max_len=64, progress=False, component="code2wav")
    frames = round(VOCODER_SECONDS * 12.5)
    codes = np.random.default_rng(seed).integers(0, vocoder.cfg.codebook_size, (vocoder.cfg.num_quantizers, frames))
    out = demo.work_dir / f"{name}-code2wav"
    taps = [a.name for a in vocoder.activations(frames)]
    comparison, index, timing = compare_model(path, codes, out, dtype=demo.dtype, root=demo.reference_root,
                                              ours=vocoder.tap(codes, taps), component="code2wav")
    t0 = time.perf_counter()
    wave = vocoder.forward(codes)[PREFIX]
    seconds = time.perf_counter() - t0
    wav = write_wav(out / "speech.wav", wave, SAMPLE_RATE)
    row = comparison[PREFIX]
    demo.say(f"{name} code2wav: {comparison.summary()}")
    demo.say(f"  {frames} frames -> {len(wave)} samples in {seconds * 1e3:.0f} ms; waveform SNR {row.snr_db:.1f} dB "
             f"against Transformers; {wav}; report {index}")
    demo.summary["vocoder"] = {"path": str(path), "passed": comparison.passed, "report": str(index), "wav": str(wav),
                               "frames": frames, "samples": len(wave), "snr_db": row.snr_db,
                               "first_divergence": comparison.first_divergence.name if comparison.first_divergence else None,
                               "compare_s": sum(timing.values())}


def speech_step(demo: Demo) -> None:
    """The tiny Omni speaks "Привет мир" on our kernels (thinker, talker, code predictor, code2wav), greedy,
    against Transformers' generate(return_audio=True): the answer, every codec code, the waveform. Ours is
    written as a wav beside the vocoder's."""
    from .compare.audio import waveform_metrics
    from .models.code2wav import SAMPLE_RATE
    from .models.speech import Speech, hf_speak
    from .reference import load_hf_model
    from .report.audio import write_wav
    from .workbench import prompt_ids

    name, preset, seed = TINY_OMNI
    path = ensure_tiny_omni(demo.work_dir / "models" / name, preset, seed)
    ids = prompt_ids(path, prompt=SPEECH_PROMPT, chat=True)
    frames = 8 if demo.quick else 40
    speech = Speech(path, max_len=len(ids) + SPEECH_TOKENS + frames + 16, progress=False)
    t0 = time.perf_counter()
    ours = speech.speak(ids, max_new_tokens=SPEECH_TOKENS, max_frames=frames)
    wave = speech.vocode(ours.codes)
    seconds = time.perf_counter() - t0
    answer, codes, hf_wave = hf_speak(load_hf_model(path, "float32"), ids, max_new_tokens=SPEECH_TOKENS, max_frames=frames)
    same_frames = min(len(codes), len(ours.codes))
    agreement = (ours.codes[:same_frames] == codes[:same_frames]).mean(axis=0) if same_frames else np.zeros(0)
    metrics = waveform_metrics(wave, hf_wave) if wave.shape == hf_wave.shape else {}
    passed = ours.text_ids == answer and ours.codes.shape == codes.shape and bool((agreement == 1).all()) \
        and metrics.get("snr_db", 0) >= 60
    out = demo.work_dir / f"{name}-speech"
    out.mkdir(parents=True, exist_ok=True)
    wav = write_wav(out / "speech.wav", wave, SAMPLE_RATE)
    demo.say(f"{name} speaks {SPEECH_PROMPT!r} (random weights: the words and the sound are noise): "
             f"{len(ours.text_ids)} answer tokens, {len(ours.codes)} frames in {seconds:.2f} s")
    demo.say(f"  against Transformers: answer {'equal' if ours.text_ids == answer else 'DIFFERENT'}, frames "
             f"{len(ours.codes)} / {len(codes)}, codebooks agreeing {int((agreement == 1).sum())} of {len(agreement)}, "
             f"waveform SNR {metrics.get('snr_db', float('nan')):.1f} dB; {wav}")
    demo.summary["speech"] = {"path": str(path), "passed": passed, "wav": str(wav), "answer": ours.text_ids,
                              "frames": len(ours.codes), "hf_frames": len(codes), "samples": len(wave),
                              "codebook_agreement": agreement.tolist(), **metrics, "seconds": seconds}
    if not passed:
        raise DemoError(f"the tiny Omni's speech departs from Transformers' (see {out})")


Step = Callable[[Demo], None]
STEPS: list[tuple[str, Step]] = [
    ("adapter", adapter_step),
    ("kernel selfcheck", selfcheck_step),
    ("tiny models", models_step),
    ("layer-by-layer comparison with Transformers", compare_step),
    ("greedy generation, ours and Transformers'", generate_step),
    ("the vocoder (code2wav) against Transformers", vocoder_step),
    ("text to speech (thinker, talker, code predictor, code2wav) against Transformers", speech_step),
]


def run_demo(work_dir: str | Path = "runs/demo", quick: bool = False, *, prompt: str = DEFAULT_PROMPT,
             reference_root: str | Path | None = None, steps: list[tuple[str, Step]] | None = None,
             say: Callable[[str], None] = print) -> dict:
    """Run the demo's steps in order and return the summary dict.

    quick: only the first tiny model and a 4-token continuation. reference_root: where references are
    captured (None: the package's reference_data/). The summary has "adapter", "selfcheck", "models"
    (name -> path, passed, worst_cosine, report, tokens ...), "passed" and "seconds".
    A failing kernel in the selfcheck raises DemoError.
    """
    demo = Demo(Path(work_dir), quick=quick, prompt=prompt,
                reference_root=Path(reference_root) if reference_root is not None else None, say=say)
    t0 = time.perf_counter()
    for title, step in steps or STEPS:
        demo.heading(title)
        step(demo)
    models = demo.summary.get("models", {})
    demo.summary["seconds"] = time.perf_counter() - t0
    demo.summary["passed"] = (all(m.get("passed", True) and m.get("tokens_ok", True) for m in models.values())
                              and all(demo.summary.get(k, {}).get("passed", True) for k in ("vocoder", "speech")))
    demo.heading(f"done in {demo.summary['seconds']:.1f} s; reports under {demo.work_dir.resolve()}")
    for name, m in models.items():
        line = f"{name:10s} {'passed' if m.get('passed') else 'FAILED'}"
        if m.get("worst_cosine") is not None:
            line += f"  worst cosine 1 - {1 - m['worst_cosine']:.1e} ({m['worst_cosine_at']})"
        if m.get("first_divergence"):
            line += f"  first divergence {m['first_divergence']}"
        if "compare_s" in m:
            line += f"  {m['compare_s']:.1f} s"
        if "tokens_match" in m:
            line += "  greedy tokens " + ("match" if m["tokens_match"] else "differ at a near tie" if m["tokens_ok"]
                                          else "DIFFER")
        if m.get("report"):
            line += f"  {m['report']}"
        say(line)
    v = demo.summary.get("vocoder")
    if v:
        say(f"{'code2wav':10s} {'passed' if v['passed'] else 'FAILED'}  waveform SNR {v['snr_db']:.1f} dB  {v['wav']}  "
            f"{v['report']}")
    sp = demo.summary.get("speech")
    if sp:
        say(f"{'speech':10s} {'passed' if sp['passed'] else 'FAILED'}  {sp['frames']} frames, codebooks agreeing "
            f"{sum(a == 1 for a in sp['codebook_agreement'])} of {len(sp['codebook_agreement'])}, waveform SNR "
            f"{sp.get('snr_db', float('nan')):.1f} dB  {sp['wav']}")
    return demo.summary


# ---------------------------------------------------------------------------------------------- helpers

def ensure_tiny(path: str | Path, preset: str = "tiny", seed: int = 0) -> Path:
    """The tiny Qwen3 checkpoint at `path`, built first if absent.

    An existing directory is taken as it is (its preset and seed are not checked): references made from it
    record its weight hash, so a different model there is refused at comparison time, not silently used.
    """
    from .models.tiny import build_tiny_qwen3

    path = Path(path)
    if (path / "config.json").is_file():
        return path
    return build_tiny_qwen3(path, seed=seed, preset=preset)


def ensure_tiny_omni(path: str | Path, preset: str = "tiny", seed: int = 0) -> Path:
    """The tiny Qwen3-Omni checkpoint at `path` (every part: thinker, talker, code2wav), built first if absent."""
    from .models.tiny_omni import build_tiny_omni

    path = Path(path)
    if (path / "config.json").is_file():
        return path
    return build_tiny_omni(path, seed=seed, preset=preset)


def reference_for(path: str | Path, inputs, dtype: str = "float32", root: str | Path | None = None,
                  say: Callable[[str], None] = print, component: str | None = None):
    """The stored reference of this model, inputs (token ids, or {name: value} as workbench.model_inputs takes
    them) and dtype, loaded and verified; captured when absent.

    A stored reference under the same name that is for another model or other inputs is replaced by a fresh
    capture (and says so).
    """
    from .reference import DEFAULT_ROOT, ReferenceMismatch, load_reference
    from .workbench import capture_reference, model_inputs, reference_name

    root = Path(root) if root is not None else DEFAULT_ROOT
    inputs = model_inputs(path, inputs, component)
    name = reference_name(path, inputs, dtype, component)
    if (root / name / "manifest.json").is_file():
        try:
            ref = load_reference(root / name, expect_model=path, expect_inputs=inputs, expect_dtype=dtype)
            say(f"loaded the stored reference {ref.path}")
            return ref
        except ReferenceMismatch as e:
            say(f"{e}\ncapturing a new one")
    t0 = time.perf_counter()
    ref = capture_reference(path, inputs, dtype, name=name, root=root, component=component)
    say(f"captured {len(ref.names)} activations into {ref.path} ({time.perf_counter() - t0:.1f} s)")
    return ref


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table (for IPython.display.Markdown); floats in 3-significant-digit scientific form."""
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3e}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)
