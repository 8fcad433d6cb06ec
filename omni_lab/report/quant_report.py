"""The quantization report: a BF16 checkpoint against its Q8_0 GGUF, both run on OUR kernels.

`quant_report(src_dir, gguf_path, ids=... | text=..., out_dir=...)`:
1. weights, streamed one tensor at a time from both files: SQNR of every tensor (compare/quant.py); a GGUF
   that is not a quantization of the checkpoint is refused here, before any model runs;
2. one forward of our model over the same ids on each side, every named activation tapped: the BF16 side
   reads the checkpoint, the Q8_0 side the GGUF;
3. drift per activation (MSE, cosine, NMSE of Q8_0 against BF16, compare.metrics), logit statistics
   (KL, same top token, RMS dp, perplexity) and, for MoE, agreement of the selected experts per layer;
4. report.json, PNG figures and index.html in out_dir, each written under a temporary name and renamed.

With `codes` (codec codes [16, frames]) it reports on the vocoder instead: quant_code2wav.py, on the helpers
here (running a side, the weights' table and figure, the drift table, the page).

Neither side is Transformers: this measures what Q8_0 weights cost, not how close our kernels are to
Transformers (that is `omni-lab compare`). With several tokens every Q8_0 linear runs our prefill matmul on
the tuning table's q8_prefill_path: "dot4" rounds the activations to int8 per block of 32 (llama.cpp's rule,
as decode's dot4 matvec does), so the error measured is the weights' and that rounding; "f32" widens the
weights in the tile and keeps activations in f32, so it is the weights' alone. MoE experts run grouped by
expert from the tuning table's moe_grouped_min_tokens_q8 tokens on, on the same path; shorter prompts take
their per-pair kernels, which round activations to int8; the report's notes say which ran.
"""

from __future__ import annotations

import gc
import html
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from ..atomic import atomic_dir, write_bytes
from ..compare import Bounds, compare_sets
from ..compare.quant import (ExpertAgreement, LogitStats, TensorSqnr, logit_stats, moe_agreement, sqnr_summary,
                             weight_sqnr)
from ..gpu import tuning
from ..ops.q8_0 import prefill_note, q8_prefill_path
from . import figures
from .html import CSS, holds_only_a_report

# llama.cpp's Q8_0 scoreboard (perplexity --kl-divergence on real models), for the reader's scale.
LLAMA_CPP_Q8_0 = {"kl_mean": (2e-4, 1.4e-3), "same_top_rate": (0.977, 0.992)}
ROUTER_SUFFIX = ".mlp.router"
LOW_SQNR_DB = 30.0  # Q8_0 gives about 45 dB on well-scaled weights; a tensor far below it is named in the notes


# ---- running both sides ---------------------------------------------------------------------------------
def run_side(path: str | Path, ids: np.ndarray, names: list[str], progress: bool = False,
             component: str | None = None, media: dict | None = None) -> dict:
    """One forward of our model (or the named component of it) of a checkpoint directory or GGUF over `ids`
    with every name tapped; returns the activations, and 'logits' for a decoder. code2wav takes codec codes
    [Q, T] as `ids`; `media` ({"input_features": ..., "pixel_values": ..., "image_grid_thw": ...}, the
    inputs besides the ids) makes the thinker read its audio and image placeholders from the encoders."""
    from ..models.registry import entry_for, input_length
    from ..workbench import load_ours, model_config

    inputs = {"input_ids": ids, **media} if media else ids
    length = input_length(path, inputs, component)
    model = load_ours(Path(path), max_len=max(length, 16), progress=progress, component=component,
                      inputs=list(inputs) if media else None)
    try:
        if media:
            entry = entry_for(model_config(path), component, str(path), list(inputs))
            return model.forward(*entry.args(inputs), taps=names)
        if model.input_name == "codes":
            return model.tap(ids, names)
        return model.forward(ids, start=0, taps=names)
    finally:
        del model
        gc.collect()  # the first side's weights go before the second side's are uploaded


# ---- the report -----------------------------------------------------------------------------------------
class BothSides:
    """What every quantization report has: a checkpoint and its GGUF (`src`, `gguf`, `model_type`), both run on
    our kernels on `adapter`, the SQNR of every tensor (`weights`) and the drift of every activation (`drift`)."""
    src: Path
    gguf: Path
    model_type: str
    weights: list[TensorSqnr]
    drift: object
    adapter: dict

    @property
    def weight_summary(self) -> dict:
        return sqnr_summary(self.weights)

    @property
    def adapter_name(self) -> str:
        a = self.adapter
        return f"{a.get('adapter', '?')} ({a.get('backend', '?')}, {a.get('adapter_type', '?')})"

    def head_json(self) -> dict:
        """report.json's first keys: what the report is, its two sides and the adapter."""
        return {
            "kind": "quantization report",
            "sides": {"reference": f"ours, BF16 weights of {self.src}", "quantized": f"ours, Q8_0 weights of {self.gguf}",
                      "note": "both sides run on omni_lab's WGSL kernels; Transformers is not involved"},
            "source": str(self.src), "gguf": str(self.gguf), "model_type": self.model_type,
            "adapter": {k: self.adapter.get(k) for k in ("adapter", "description", "vendor", "backend", "adapter_type")},
        }


def finite_or_none(v):
    """v, or None where it is inf or NaN: strict JSON has neither."""
    return v if v is None or math.isfinite(v) else None


def drift_json(drift, typed: bool = False) -> list[dict]:
    """The compared rows of a drift Comparison for report.json; `typed` adds each row's kind and layout, and a
    waveform's dB figures."""
    fin = finite_or_none
    out = []
    for r in drift.rows:
        if not r.compared:
            continue
        d = {"name": r.name, "shape": list(r.shape_ref or ()), "mse": fin(r.mse), "cosine": fin(r.cosine),
             "nmse": fin(r.nmse), "max_abs": fin(r.max_abs)}
        if typed:
            d.update(kind=r.kind, layout=r.layout)
            if r.kind == "waveform":
                d.update(snr_db=fin(r.snr_db), si_sdr_db=fin(r.si_sdr_db), mel_distance_db=fin(r.mel_distance_db))
        out.append(d)
    return out


@dataclass
class QuantReport(BothSides):
    src: Path
    gguf: Path
    model_type: str
    ids: np.ndarray = field(repr=False)
    weights: list[TensorSqnr] = field(repr=False)
    drift: object = field(repr=False)          # compare.Comparison: Q8_0 side against the BF16 side
    logits: LogitStats = field(repr=False)
    moe: list[ExpertAgreement]
    adapter: dict
    notes: list[str]
    text: str | None = None
    truncated_from: int | None = None
    timing: dict = field(default_factory=dict)
    index: Path | None = None

    def to_json(self) -> dict:
        from ..reference.store import library_versions

        return {
            **self.head_json(),
            "inputs": {"input_ids": self.ids.tolist(), "tokens": len(self.ids), "text": self.text,
                       "truncated_from": self.truncated_from},
            "weights": {"summary": self.weight_summary, "tensors": [t.to_json() for t in self.weights]},
            "activations": drift_json(self.drift),
            "logits": self.logits.to_json(),
            "moe": ({"k": self.moe[0].k, "layers": [m.to_json() for m in self.moe]} if self.moe else None),
            "llama_cpp_q8_0_reference": LLAMA_CPP_Q8_0,
            "notes": self.notes,
            "timing": self.timing,
            "versions": library_versions(),
        }

    def summary(self) -> str:
        lg, w = self.logits, self.weight_summary
        parts = [f"Q8_0 vs BF16 weights, both on our kernels ({self.adapter_name}), {lg.tokens} tokens:",
                 f"  KL mean {lg.kl_mean:.3g} (median {lg.kl_median:.3g}, p99 {lg.kl_p99:.3g}, max {lg.kl_max:.3g})",
                 f"  same top token {lg.same_top}/{lg.tokens} = {100 * lg.same_top_rate:.1f}%{_flips(lg)}, "
                 f"RMS dp(top) {lg.rms_dp_top:.3g}",
                 f"  PPL {_num(lg.ppl_ref)} -> {_num(lg.ppl_q)}, ratio {_num(lg.ppl_ratio, 6)}"]
        if w["min_db"] is not None:
            parts.append(f"  weight SQNR min {w['min_db']:.2f} dB ({w['min_name']}), median {w['median_db']:.2f} dB "
                         f"over {w['quantized']} Q8_0 tensors")
        if self.moe:
            worst = min(self.moe, key=lambda m: m.set_agreement)
            parts.append(f"  experts: set agreement {min(m.set_agreement for m in self.moe):.3f} (worst layer "
                         f"{worst.layer}) to {max(m.set_agreement for m in self.moe):.3f} over {len(self.moe)} MoE layers")
        return "\n".join(parts)


def _flips(lg: LogitStats) -> str:
    if not lg.top_flips:
        return ""
    widest = max(f["ref_margin"] for f in lg.top_flips)
    return f" ({len(lg.top_flips)} flipped, BF16's two best at most {widest:.2g} apart)"


def _num(v, digits: int = 4) -> str:
    return "—" if v is None else f"{v:.{digits}g}"


def quant_report(src_dir: str | Path, gguf_path: str | Path, ids=None, text: str | None = None,
                 out_dir: str | Path | None = None, *, codes=None, max_tokens: int | None = None,
                 progress: bool = False, audio=None, images=None):
    """Measure the GGUF `gguf_path` against the checkpoint `src_dir` over token `ids` (or `text`, tokenized
    with the checkpoint's tokenizer, cut to `max_tokens`), and write the report into `out_dir` when given.
    With codec `codes` instead ([16, frames] or [frames, 16] integers), the vocoder's report
    (quant_code2wav.Code2WavQuantReport). With `audio` (mel features per audio, models/audio_in.py), the
    prompt is the chat template's user turn of the audios and `text`, and the drift spans the audio encoder
    and the thinker; with `images` ((pixel_values, image_grid_thw), models/image_in.py) likewise through the
    vision encoder, its DeepStack features included."""
    from ..gpu import runtime
    from ..models.qwen3 import ModelInputError
    from ..workbench import activation_names, prompt_ids

    src, gguf = Path(src_dir), Path(gguf_path)
    with_media = audio is not None or images is not None
    if not with_media and sum(x is not None for x in (ids, text, codes)) != 1:
        raise ValueError("quant_report: give exactly one of ids, text or codes")
    if with_media and (ids is not None or codes is not None):
        raise ValueError("quant_report: audio and images take a text (or none), not ids or codes")
    if codes is not None:
        from .quant_code2wav import code2wav_quant_report

        return code2wav_quant_report(src, gguf, codes, out_dir, progress=progress)
    if not gguf.is_file():
        raise FileNotFoundError(f"{gguf}: no such GGUF file")
    timing = {}
    t0 = time.perf_counter()
    weights = weight_sqnr(src, gguf, progress=progress)  # refuses a mismatched pair before anything runs
    timing["weights_s"] = time.perf_counter() - t0

    media = {}
    if with_media:
        from ..models.image_in import media_prompt_ids
        from ..models.registry import input_specs

        grid = None if images is None else images[1]
        ids = media_prompt_ids(src, text, [np.shape(f)[1] for f in audio or []], grid)
        max_tokens = None  # the placeholders cannot be cut
        media = {**({"input_features": audio} if audio is not None else {}),
                 **({"pixel_values": images[0], "image_grid_thw": images[1]} if images is not None else {})}
    else:
        ids = prompt_ids(src, prompt=text) if text is not None else prompt_ids(src, ids=ids)
    truncated_from = None
    if max_tokens is not None and len(ids) > max_tokens:
        truncated_from, ids = len(ids), ids[:max_tokens]
    if len(ids) < 2:
        raise ModelInputError(f"quant_report needs at least 2 tokens (perplexity is over next tokens), got {len(ids)}")
    if with_media:
        names = [a.name for a in input_specs(src, {"input_ids": ids, **media})]
    else:
        names = activation_names(src)
    t0 = time.perf_counter()
    ref = run_side(src, ids, names, progress, media=media)
    timing["bf16_forward_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    q = run_side(gguf, ids, names, progress, media=media)
    timing["q8_0_forward_s"] = time.perf_counter() - t0

    dense = [n for n in names if not n.endswith(ROUTER_SUFFIX)]
    drift = compare_sets({n: q[n] for n in dense}, {n: ref[n] for n in dense},
                         Bounds(mse=None, cosine=None, nmse=None, max_abs=None),
                         manifest={"dtype": "BF16 weights (ours)"})
    gpu = runtime().gpu.describe()
    notes = [
        sides_note(gpu),
        f"One prefill over {len(ids)} tokens: every Q8_0 linear ran the prefill matmul ({prefill_note()})"
        + ("." if q8_prefill_path() == "dot4" else "; decode's int8 matvec (dot4) also rounds activations and is "
           "not measured here."),
    ]
    if any(n.endswith(ROUTER_SUFFIX) for n in names):
        notes.append("MoE experts ran grouped by expert, on the same prefill path."
                     if len(ids) >= tuning.current().moe_grouped_min_tokens_q8 else
                     "MoE experts ran their per-pair kernels, which take int8 activations (blocks of 32, llama.cpp's "
                     "rule): their error includes that rounding.")
        notes.append("Router activations are compared as expert agreement, not in the drift table.")
    if audio is not None:
        notes.append(f"The prompt holds {int(np.isin(ids, _media_token(src, 'audio_token_id')).sum())} audio placeholders from "
                     f"{len(audio)} audio(s): the drift runs through the audio encoder into the thinker; the logit "
                     "statistics count the placeholders' positions too.")
    if images is not None:
        notes.append(f"The prompt holds {int(np.isin(ids, _media_token(src, 'image_token_id')).sum())} image "
                     f"placeholders from {len(np.atleast_2d(images[1]))} image(s): the drift runs through the vision "
                     "encoder (its linears Q8_0, the patch embedding and the position grid kept as stored) and its "
                     "DeepStack features into the thinker.")
    notes += low_sqnr_notes(weights)
    if truncated_from:
        notes.append(f"The text gave {truncated_from} tokens; the first {len(ids)} were used.")
    report = QuantReport(src=src, gguf=gguf, model_type=_model_type(src), ids=np.asarray(ids),
                         weights=weights, drift=drift, logits=logit_stats(ref["logits"], q["logits"], ids),
                         moe=moe_agreement(ref, q), adapter=gpu, notes=notes, text=text,
                         truncated_from=truncated_from, timing=timing)
    if out_dir is not None:
        write_quant_report(report, out_dir)
    return report


def _media_token(src: Path, name: str) -> int:
    from ..workbench import model_config

    return int(model_config(src)["thinker_config"][name])


def _model_type(src: Path) -> str:
    from ..workbench import model_type

    return model_type(src)


def sides_note(gpu: dict) -> str:
    """The first note of every quantization report: where both sides ran, and that neither is Transformers."""
    return (f"Both sides ran on omni_lab's WGSL kernels on {gpu.get('adapter', '?')} ({gpu.get('backend', '?')}, "
            f"{gpu.get('adapter_type', '?')}): the reference reads the BF16 checkpoint, the other side the Q8_0 GGUF. "
            "Transformers is not involved; this measures Q8_0, not our agreement with Transformers.")


def low_sqnr_notes(weights: list[TensorSqnr]) -> list[str]:
    """A note naming the Q8_0 tensors far below Q8_0's usual SQNR, and why f16 scales cause it (or none)."""
    low = sorted((t for t in weights if t.quantized and t.sqnr_db < LOW_SQNR_DB), key=lambda t: t.sqnr_db)
    if not low:
        return []
    return [f"{len(low)} Q8_0 tensors have an SQNR below {LOW_SQNR_DB:g} dB, the worst '{low[0].name}' "
            f"({low[0].sqnr_db:.1f} dB, largest |w| {low[0].max_abs:.3g}). Q8_0's scale is f16: blocks whose "
            f"largest |w| is below about {127 * 2.0 ** -25:.1e} quantize to zero, and below "
            f"{127 * 2.0 ** -14:.1e} lose precision."]


# ---- figures --------------------------------------------------------------------------------------------
def tensor_group(name: str) -> str:
    """The kind a tensor is drawn and summarised as: code2wav's as their own group, the rest by their role."""
    if name.startswith("code2wav."):
        return "code2wav"
    if ".mlp.experts." in name or ".experts." in name:
        return "MoE experts"
    if "embed" in name or "lm_head" in name:
        return "embedding / head"
    if ".self_attn." in name or ".attn." in name:
        return "attention"
    if ".mlp." in name:
        return "MLP"
    return "other"


def sqnr_figure(report: QuantReport, annotate: int = 3):
    """SQNR of every Q8_0 tensor, sorted ascending, coloured by kind, with the Gaussian expectation."""
    q = sorted((t for t in report.weights if t.quantized and math.isfinite(t.sqnr_db)), key=lambda t: t.sqnr_db)
    fig = figures.new_figure(10, 4.5)
    ax = fig.subplots()
    groups: dict[str, list[tuple[int, float]]] = {}
    for i, t in enumerate(q):
        groups.setdefault(tensor_group(t.name), []).append((i, t.sqnr_db))
    for g, pts in sorted(groups.items()):
        x, y = zip(*pts)
        ax.plot(x, y, "o", ms=3.5, label=f"{g} ({len(pts)})")
    theory = report.weight_summary["gaussian_theory_db"]
    ax.axhline(theory, color="grey", ls="--", lw=1, label=f"Gaussian weights: {theory:.1f} dB")
    if q:
        ax.text(0.01, 0.97, "lowest:\n" + "\n".join(f"{t.sqnr_db:6.2f} dB  {t.name}" for t in q[:annotate]),
                transform=ax.transAxes, fontsize=7, family="monospace", va="top",
                bbox=dict(boxstyle="round", fc="white", ec="#ccc", alpha=0.9))
    ax.set_xlabel("tensor (sorted by SQNR)")
    ax.set_ylabel("SQNR (dB)")
    zero = sum(1 for t in report.weights if t.quantized and math.isnan(t.sqnr_db))
    ax.set_title(f"Weight SQNR of {len(q)} Q8_0 tensors: 10 log10(sum w^2 / sum (w - deq q(w))^2)"
                 + (f"\n({zero} all-zero tensors, exact in Q8_0, left out)" if zero else ""), fontsize=10)
    ax.grid(True, alpha=0.3)
    if q:
        lo, hi = min(q[0].sqnr_db, theory), max(q[-1].sqnr_db, theory)
        ax.set_ylim(lo - 0.1 * (hi - lo) - 0.2, hi + 0.6 * (hi - lo) + 0.5)  # headroom for the text box
        ax.legend(fontsize=8, loc="upper right")
    return fig


def drift_figure(report: QuantReport):
    """NMSE and 1 - cosine of each activation kind against layer (log scale), Q8_0 side against BF16 side."""
    comp = report.drift
    parts = figures.split_names(comp.names)
    by_kind: dict[str, list] = {}
    for r in comp.rows:
        p = parts[r.name]
        if r.compared and p.layer is not None:
            by_kind.setdefault(p.kind, []).append((p.layer, r))
    fig = figures.new_figure(11, 4.2)
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("nmse", "cosine")):
        for kind, items in by_kind.items():
            items.sort(key=lambda t: t[0])
            y = np.array([r.nmse if metric == "nmse" else 1.0 - r.cosine for _, r in items])
            ax.plot([layer for layer, _ in items], np.maximum(y, figures.FLOOR), marker="o", ms=3, lw=1.2, label=kind)
        ax.set_yscale("log")
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(figures.METRIC_LABELS[metric])
        ax.grid(True, which="major", alpha=0.3)
    if by_kind:
        axes[0].legend(fontsize=8)
    fig.suptitle("Activation drift: Q8_0 weights against BF16 weights, both on our kernels")
    return fig


def kl_histogram(report: QuantReport):
    """Per-token KL(p_bf16 || p_q8) on a log axis, with mean, median, p99 and llama.cpp's Q8_0 band."""
    lg = report.logits
    kl = np.maximum(lg.kl, figures.FLOOR)
    fig = figures.new_figure(8, 4)
    ax = fig.subplots()
    lo, hi = np.log10(kl.min()), np.log10(kl.max())
    bins = np.logspace(lo - 0.1, hi + 0.1 if hi > lo else lo + 0.2, 30)
    ax.hist(kl, bins=bins, color="tab:blue")
    ax.set_xscale("log")
    band = LLAMA_CPP_Q8_0["kl_mean"]
    ax.axvspan(*band, color="tab:green", alpha=0.15, label=f"llama.cpp Q8_0 mean KLD {band[0]:g} to {band[1]:g}")
    for v, name, style in ((lg.kl_mean, "mean", "-"), (lg.kl_median, "median", "--"), (lg.kl_p99, "p99", ":")):
        ax.axvline(max(v, figures.FLOOR), color="tab:red", ls=style, lw=1.2, label=f"{name} {v:.3g}")
    ax.set_xlabel("KL(p_bf16 || p_q8) per token (nats)")
    ax.set_ylabel("tokens")
    ax.set_title(f"KL divergence of the next-token distribution, {lg.tokens} tokens")
    ax.legend(fontsize=8)
    return fig


def expert_figure(report: QuantReport):
    """Per MoE layer: fraction of selected experts shared as sets, and in the same slot."""
    fig = figures.new_figure(8, 3.8)
    ax = fig.subplots()
    if not report.moe:
        ax.text(0.5, 0.5, "no MoE layers", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    x = np.arange(len(report.moe))
    ax.bar(x - 0.2, [m.set_agreement for m in report.moe], 0.4, label="same experts (as sets)")
    ax.bar(x + 0.2, [m.exact_order for m in report.moe], 0.4, label="same expert in the same slot")
    ax.set_xticks(x, [str(m.layer) for m in report.moe])
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("layer")
    ax.set_ylabel("fraction of (token, slot)")
    ax.set_title(f"Expert selection, Q8_0 against BF16 (top-{report.moe[0].k}, {report.moe[0].tokens} tokens)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, axis="y", alpha=0.3)
    return fig


FIGURES = (("sqnr.png", "Weight SQNR per tensor, sorted", sqnr_figure),
           ("drift.png", "Activation drift against layer (log scale)", drift_figure),
           ("kl_hist.png", "Per-token KL divergence", kl_histogram),
           ("experts.png", "Expert-selection agreement per MoE layer", expert_figure))


# ---- files ----------------------------------------------------------------------------------------------
def fmt(v, spec: str = ".3g") -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def both_ours_html(report: BothSides) -> str:
    """The sentence every quantization report opens with."""
    return (f"Both sides are <b>our</b> kernels on {html.escape(report.adapter_name)}: BF16 weights against\n"
            "Q8_0 weights. Transformers is not involved; this measures what Q8_0 costs.")


def meta_table(report: BothSides, inputs: str, timing: dict) -> str:
    """The table of the two files, the adapter, the model type, the inputs (HTML) and the time taken."""
    e = html.escape
    meta = [("Reference side", f"ours, BF16 weights: <code>{e(str(report.src))}</code>"),
            ("Quantized side", f"ours, Q8_0 weights: <code>{e(str(report.gguf))}</code>"),
            ("Adapter", e(report.adapter_name)), ("Model type", e(report.model_type)),
            ("Inputs", inputs),
            ("Time", e(", ".join(f"{k} {v:.1f} s" for k, v in timing.items())))]
    return "<table>" + "".join(f"<tr><th class='name'>{k}</th><td class='name'>{v}</td></tr>" for k, v in meta) + "</table>"


def images_html(images: list[tuple[str, str]]) -> str:
    e = html.escape
    return "".join(f"<h3>{e(cap)}</h3><img src='{e(f)}' alt='{e(cap)}'>" for f, cap in images)


def drift_table(drift, notes: bool = False) -> str:
    """The drift section: every compared activation in execution order; `notes` adds a column with a
    waveform's dB figures and a type other than float [tokens, features]."""
    e = html.escape
    rows = []
    for i, r in enumerate(drift.rows):
        if not r.compared:
            continue
        row = (f"<tr><td>{i}</td><td class='name'>{e(r.name)}</td><td>{fmt(r.mse, '.3e')}</td>"
               f"<td>{fmt(r.cosine, '.8f')}</td><td>{fmt(r.nmse, '.3e')}</td><td>{fmt(r.max_abs, '.3e')}</td>")
        if notes:
            said = ([r.waveform_text()] if r.kind == "waveform" else []) + \
                ([f"{r.kind}, {r.layout}"] if (r.kind, r.layout) != ("float", "TF") else [])
            row += f"<td class='name'>{e('; '.join(said))}</td>"
        rows.append(row + "</tr>")
    head = "<th class='name'>notes</th>" if notes else ""
    return ("<h2>Activation drift, in execution order (Q8_0 side against BF16 side)</h2>\n"
            "<table><tr><th>#</th><th class=\"name\">name</th><th>MSE</th><th>cosine</th><th>NMSE</th>"
            f"<th>max |err|</th>{head}</tr>\n{''.join(rows)}</table>")


def sqnr_section(report: BothSides) -> str:
    """Every Q8_0 tensor's SQNR, worst first, and how many tensors stayed unquantized."""
    e = html.escape
    w = report.weight_summary
    q = sorted((t for t in report.weights if t.quantized), key=lambda t: (math.isnan(t.sqnr_db), t.sqnr_db))
    sqnr_rows = "".join(f"<tr><td class='name'>{e(t.name)}</td><td>{e(str(list(t.shape)))}</td><td>{e(t.source_dtype)}</td>"
                        f"<td>{fmt(t.sqnr_db, '.2f')}</td></tr>" for t in q)
    return (f"<h2>Weight SQNR of the {len(q)} Q8_0 tensors (worst first)</h2>\n"
            f"<p>{w['unquantized']} tensors stayed unquantized; {w['unquantized_identical']} of them are bit-identical "
            "to the checkpoint.</p>\n"
            "<table><tr><th class=\"name\">tensor</th><th>shape</th><th>source</th><th>SQNR (dB)</th></tr>"
            f"{sqnr_rows}</table>")


def page(title: str, verdict: str, body: str, passed: bool = True) -> str:
    """A whole report page: title, the verdict box, the body, the link to report.json."""
    e = html.escape
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{e(title)}</title><style>{CSS}</style></head>
<body>
<h1>{e(title)}</h1>
<div class="verdict {'pass' if passed else 'fail'}">{verdict}</div>
{body}
<p><a href="report.json">report.json</a></p>
</body></html>
"""


def render_html(report: QuantReport, images: list[tuple[str, str]], title: str) -> str:
    e = html.escape
    lg, w = report.logits, report.weight_summary
    band_kl, band_top = LLAMA_CPP_Q8_0["kl_mean"], LLAMA_CPP_Q8_0["same_top_rate"]
    headline = [
        ("mean KL(p_bf16 || p_q8)", fmt(lg.kl_mean), f"{band_kl[0]:g} to {band_kl[1]:g}"),
        ("median KL", fmt(lg.kl_median), ""), ("99th percentile KL", fmt(lg.kl_p99), ""),
        ("max KL", fmt(lg.kl_max), ""),
        ("same top token", f"{lg.same_top}/{lg.tokens} = {100 * lg.same_top_rate:.2f}%{_flips(lg)}",
         f"{100 * band_top[0]:.1f}% to {100 * band_top[1]:.1f}%"),
        ("RMS dp of the BF16 top token", fmt(lg.rms_dp_top), ""),
        ("RMS dp of the next token (llama.cpp's RMS dp)", fmt(lg.rms_dp_next), ""),
        ("perplexity BF16 / Q8_0", f"{fmt(lg.ppl_ref, '.6g')} / {fmt(lg.ppl_q, '.6g')}", ""),
        ("perplexity ratio Q8_0 / BF16", fmt(lg.ppl_ratio, ".6f"), ""),
        ("weight SQNR min / median (dB)", f"{fmt(w['min_db'], '.2f')} / {fmt(w['median_db'], '.2f')}",
         f"Gaussian weights: {w['gaussian_theory_db']:.1f}"),
    ]
    if report.moe:
        headline.append(("expert set agreement, worst layer", fmt(min(m.set_agreement for m in report.moe), ".4f"), ""))
    head_rows = "".join(f"<tr><th class='name'>{e(k)}</th><td>{e(v)}</td><td>{e(ref)}</td></tr>" for k, v, ref in headline)
    inputs = f"{len(report.ids)} tokens" + (f", from text {e(repr(report.text[:80]))}" if report.text else "")
    notes = "".join(f"<li>{e(n)}</li>" for n in report.notes)
    moe_rows = "".join(f"<tr><td>{m.layer}</td><td class='name'>{e(m.name)}</td><td>{m.set_agreement:.4f}</td>"
                       f"<td>{m.exact_order:.4f}</td><td>{m.tokens_all_same:.4f}</td></tr>" for m in report.moe)
    moe_html = ("<h2>Expert selection per MoE layer</h2><table><tr><th>layer</th><th class='name'>router</th>"
                "<th>same experts (sets)</th><th>same slot</th><th>tokens with all k the same</th></tr>"
                f"{moe_rows}</table>") if report.moe else ""
    body = f"""{meta_table(report, inputs, report.timing)}
<h2>Summary</h2>
<table><tr><th class="name">measure</th><th>this model</th><th>llama.cpp Q8_0 (real models)</th></tr>{head_rows}</table>
<ul>{notes}</ul>
<h2>Figures</h2>
{images_html(images)}
{moe_html}
{drift_table(report.drift)}
{sqnr_section(report)}"""
    return page(title, both_ours_html(report), body)


def write_quant_report(report: QuantReport, out_dir: str | Path, *,
                       title: str = "omni_lab: Q8_0 against BF16 (both on our kernels)") -> Path:
    """report.json, the PNGs and index.html into out_dir (quant_report.write_pages); returns index.html."""
    made = [f for f in FIGURES if f[0] != "experts.png" or report.moe]
    return write_pages(report, Path(out_dir), made, render_html, title)


def write_pages(report, out: Path, made, render, title: str, sounds=()) -> Path:
    """What every quantization report writes: the WAV files `sounds` ((file, wave, sample rate)), the figures
    `made` ((file, caption, make(report) -> Figure)), report.json (report.to_json()) and index.html (render(report,
    images, title)). A new `out`, or one holding only a previous report, is built beside and swapped in whole
    (as compare's report: a reader or a killed run sees the old report or the new one); into a folder holding
    other files they are written one by one, each atomically, the page last. Returns index.html."""
    from .audio import write_wav

    def write(into: Path) -> None:
        for fname, wave, rate in sounds:
            write_wav(into / fname, wave, rate)
        images = []
        for fname, caption, make in made:
            write_bytes(into / fname, figures.png_bytes(make(report), dpi=110))
            images.append((fname, caption))
        write_bytes(into / "report.json", (json.dumps(report.to_json(), indent=1, allow_nan=False) + "\n").encode())
        write_bytes(into / "index.html", render(report, images, title).encode("utf-8"))

    report.index = out / "index.html"
    if holds_only_a_report(out):
        with atomic_dir(out) as tmp:
            write(tmp)
    else:
        out.mkdir(parents=True, exist_ok=True)
        write(out)
    return report.index
