"""The quantization report of code2wav: the vocoder of a BF16 checkpoint against the vocoder of its Q8_0 GGUF,
both on OUR kernels, over the same codec codes.

`code2wav_quant_report(src_dir, gguf_path, codes, out_dir)`, which `quant_report(..., codes=...)` and
`omni-lab quant-report --codes` call:
1. weights: the SQNR of every tensor, as in the thinker's report (compare/quant.py weight_sqnr, which refuses a
   GGUF that is not a quantization of the checkpoint before any model runs), summarised per group with
   code2wav's on its own, and why each of code2wav's weights that stayed as stored did (a row of
   formats/quantize.py KEEP_AS_STORED, or a K that Q8_0 cannot take);
2. one forward of Code2Wav on each side over the codes, every activation of code2wav_activations tapped;
3. drift of every activation through compare_sets, typed by those activations ([T, F], [C, T], the waveform),
   and the waveform itself: SNR, SI-SDR, log-mel distance and max |err| (compare.audio.waveform_metrics),
   judged by WAVEFORM_BOUNDS["q8_0"];
4. report.json, both waveforms as 32-bit float WAV files, PNG figures and index.html with two players in
   out_dir, each written under a temporary name and renamed.

Which kernels ran: a Q8_0 linear over two or more rows runs q8_matmul on the tuning table's q8_prefill_path
(dot4: the activations rounded to int8 as well; f32: the weights widened in the tile, f32 activations, so the
error is the weights' alone); over one row (the transformer of a one-frame decode) it runs the decode matvec,
whose dot4 path rounds the activations to int8 too. The notes say which.
"""

from __future__ import annotations

import html
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..compare import WAVEFORM_BOUNDS, Bounds, WaveformBounds, compare_sets, waveform_metrics
from ..compare.quant import TensorSqnr, sqnr_summary, weight_sqnr
from ..formats.q8_0 import QK
from ..formats.quantize import kept_by
from ..models.code2wav import PREFIX, SAMPLE_RATE
from ..ops.q8_0 import prefill_note
from . import figures
from .html import player
from .quant_report import (BothSides, both_ours_html, drift_json, drift_table, finite_or_none, fmt, images_html,
                           low_sqnr_notes, meta_table, page, run_side, sides_note, sqnr_figure, sqnr_section,
                           tensor_group, write_pages)

COMPONENT = "code2wav"
BOUNDS = "q8_0"  # the WAVEFORM_BOUNDS entry the waveform is judged by: Q8_0 weights against BF16
WAV_FILES = {"bf16": "code2wav_bf16.wav", "q8_0": "code2wav_q8_0.wav"}
TITLE = "omni_lab: code2wav, Q8_0 against BF16 (both on our kernels)"
SIDE_LABELS = ("BF16", "Q8_0")  # (reference, quantized) in the figures
# waveform_metrics' keys: label, and how WaveformBounds limits it (None: not bounded)
METRICS = (("snr_db", "SNR", ">="), ("si_sdr_db", "SI-SDR", ">="), ("mel_distance_db", "mel distance", "<="),
           ("max_abs", "max |err|", None))


def bound_of(b: WaveformBounds, key: str):
    return getattr(b, key, None)


def bounds_text(b: WaveformBounds) -> str:
    parts = [f"{label} {op} {bound_of(b, key):g} dB" for key, label, op in METRICS if op and bound_of(b, key) is not None]
    return ", ".join(parts) or "none"


def _db(v) -> str:
    """A dB figure for the page: inf is what an identical waveform gives, and is said."""
    return "inf" if v == math.inf else fmt(v, ".4g")


def why_kept(t: TensorSqnr) -> str:
    """Why a weight of two or more dimensions is not Q8_0 in the GGUF."""
    reason = kept_by(t.name)
    if reason is not None:
        return reason
    if t.shape[-1] % QK:
        return f"K = {t.shape[-1]} is not a multiple of {QK}"
    return "left as stored when this GGUF was made (a --keep pattern)"


@dataclass
class Code2WavQuantReport(BothSides):
    src: Path
    gguf: Path
    model_type: str
    codes: np.ndarray = field(repr=False)      # [Q, T]
    weights: list[TensorSqnr] = field(repr=False)
    drift: object = field(repr=False)          # compare.Comparison: Q8_0 side against the BF16 side
    waveform: dict                             # waveform_metrics of the Q8_0 side's waveform against BF16's
    wave_ref: np.ndarray = field(repr=False)   # [N], BF16 weights
    wave_q: np.ndarray = field(repr=False)     # [N], Q8_0 weights
    adapter: dict
    notes: list[str]
    bounds: WaveformBounds                     # WAVEFORM_BOUNDS["q8_0"] when the report ran
    sample_rate: int = SAMPLE_RATE
    timing: dict = field(default_factory=dict)
    index: Path | None = None

    @property
    def identical(self) -> bool:
        return bool(np.array_equal(self.wave_q, self.wave_ref))

    @property
    def violations(self) -> list[str]:
        return self.bounds.violations(self.waveform)

    @property
    def passed(self) -> bool:
        """The waveform within WAVEFORM_BOUNDS["q8_0"] of BF16's (the CLI's exit status)."""
        return not self.violations

    @property
    def groups(self) -> dict[str, dict]:
        """sqnr_summary of each tensor group (quant_report.tensor_group), in checkpoint order."""
        by: dict[str, list[TensorSqnr]] = {}
        for t in self.weights:
            by.setdefault(tensor_group(t.name), []).append(t)
        return {g: sqnr_summary(ts) for g, ts in by.items()}

    @property
    def kept(self) -> dict[str, list[str]]:
        """code2wav's weights of two or more dimensions that are not Q8_0, by the reason (why_kept)."""
        out: dict[str, list[str]] = {}
        for t in self.weights:
            if tensor_group(t.name) == COMPONENT and len(t.shape) >= 2 and not t.quantized:
                out.setdefault(why_kept(t), []).append(t.name)
        return out

    def to_json(self) -> dict:
        from ..reference.store import library_versions

        return {
            **self.head_json(),
            "component": COMPONENT,
            "inputs": {"codes": self.codes.tolist(), "codebooks": int(self.codes.shape[0]),
                       "frames": int(self.codes.shape[1])},
            "weights": {"summary": self.weight_summary, "groups": self.groups,
                        "code2wav_kept": [{"reason": r, "tensors": n} for r, n in self.kept.items()],
                        "tensors": [t.to_json() for t in self.weights]},
            "activations": drift_json(self.drift, typed=True),
            "waveform": {
                "name": PREFIX, "samples": int(self.wave_ref.size), "sample_rate": self.sample_rate,
                **{k: finite_or_none(v) for k, v in self.waveform.items()},  # SNR inf (identical) is null
                "identical": self.identical,
                "bounds": {"name": BOUNDS, **asdict(self.bounds)},
                "within_bounds": self.passed, "violations": self.violations, "files": WAV_FILES},
            "notes": self.notes,
            "timing": self.timing,
            "versions": library_versions(),
        }

    def verdict(self) -> str:
        m = self.waveform
        if self.identical:
            return "bit-identical to BF16's (SNR inf)"
        said = (f"SNR {m['snr_db']:.1f} dB, SI-SDR {m['si_sdr_db']:.1f} dB, mel distance "
                f"{m['mel_distance_db']:.3g} dB, max |err| {m['max_abs']:.3g}")
        if self.passed:
            return f"{said}: within the {BOUNDS} bounds ({bounds_text(self.bounds)})"
        return f"{said}: OUT of the {BOUNDS} bounds: {'; '.join(self.violations)}"

    def summary(self) -> str:
        t = self.codes.shape[1]
        c2w, w = self.groups.get(COMPONENT) or sqnr_summary([]), self.weight_summary
        parts = [f"Q8_0 vs BF16 weights, code2wav on our kernels ({self.adapter_name}), {t} frames -> "
                 f"{self.wave_ref.size} samples ({self.wave_ref.size / self.sample_rate:.2f} s at {self.sample_rate} Hz):",
                 f"  waveform {self.verdict()}"]
        if c2w["min_db"] is not None:
            parts.append(f"  code2wav weight SQNR min {c2w['min_db']:.2f} dB ({c2w['min_name']}), median "
                         f"{c2w['median_db']:.2f} dB over {c2w['quantized']} Q8_0 tensors")
        else:
            parts.append("  no code2wav weight is Q8_0 in this GGUF")
        if w["min_db"] is not None:
            parts.append(f"  all weights: SQNR min {w['min_db']:.2f} dB, median {w['median_db']:.2f} dB over "
                         f"{w['quantized']} Q8_0 tensors")
        return "\n".join(parts)


def _kernel_note(frames: int) -> str:
    if frames >= 2:
        return (f"{frames} frames: every Q8_0 linear ran q8_matmul over {frames} rows (the transformer's) or more (the "
                f"ConvNeXt's, over the upsampled frames): {prefill_note()}.")
    return ("One frame: the transformer's Q8_0 linears ran the one-row decode matvec (the tuning table's path; dot4 "
            "rounds the activations to int8 as well), the ConvNeXt's q8_matmul over the upsampled frames.")


def _weights_note(weights: list[TensorSqnr]) -> str:
    mine = [t for t in weights if tensor_group(t.name) == COMPONENT]
    quantized = sum(t.quantized for t in mine)
    if not quantized:
        return ("No weight of code2wav is Q8_0 in this GGUF (made with --keep 'code2wav.*'?): both sides run the "
                "same vocoder weights, so the waveforms should be bit-identical.")
    return (f"{quantized} of code2wav's {sum(len(t.shape) >= 2 for t in mine)} weights of two or more dimensions "
            "are Q8_0: its linears where K allows. Its convolutions and code embedding stay as stored "
            "(formats/quantize.py KEEP_AS_STORED); the table below says why each of the others did.")


def code2wav_quant_report(src_dir: str | Path, gguf_path: str | Path, codes, out_dir: str | Path | None = None, *,
                          progress: bool = False) -> Code2WavQuantReport:
    """Measure the vocoder of the GGUF `gguf_path` against the checkpoint `src_dir`'s over codec `codes`
    ([16, frames] or [frames, 16] integers), and write the report into `out_dir` when given."""
    from ..gpu import runtime
    from ..workbench import activation_specs, model_inputs, model_type

    src, gguf = Path(src_dir), Path(gguf_path)
    if not gguf.is_file():
        raise FileNotFoundError(f"{gguf}: no such GGUF file")
    codes = model_inputs(src, codes, COMPONENT)["codes"]  # [Q, T], checked against the vocoder before any work
    timing = {}
    t0 = time.perf_counter()
    weights = weight_sqnr(src, gguf, progress=progress)  # refuses a mismatched pair before anything runs
    timing["weights_s"] = time.perf_counter() - t0
    specs = activation_specs(src, codes.shape[1], COMPONENT)
    names = [a.name for a in specs]
    t0 = time.perf_counter()
    ref = run_side(src, codes, names, progress, COMPONENT)
    timing["bf16_forward_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    q = run_side(gguf, codes, names, progress, COMPONENT)
    timing["q8_0_forward_s"] = time.perf_counter() - t0

    bounds = WAVEFORM_BOUNDS[BOUNDS]
    # Only the waveform is judged (by the q8_0 bounds); the other activations are measured, not bounded.
    drift = compare_sets(q, ref, Bounds(mse=None, cosine=None, nmse=None, max_abs=None, waveform=bounds), specs=specs,
                         manifest={"dtype": "BF16 weights (ours)"}, sample_rate=SAMPLE_RATE)
    gpu = runtime().gpu.describe()
    notes = [sides_note(gpu), _kernel_note(codes.shape[1]), _weights_note(weights), *low_sqnr_notes(weights)]
    report = Code2WavQuantReport(src=src, gguf=gguf, model_type=model_type(src),
                                 codes=codes, weights=weights, drift=drift,
                                 waveform=waveform_metrics(q[PREFIX], ref[PREFIX], SAMPLE_RATE), wave_ref=ref[PREFIX],
                                 wave_q=q[PREFIX], adapter=gpu, notes=notes, bounds=bounds, timing=timing)
    if out_dir is not None:
        write_code2wav_quant_report(report, out_dir)
    return report


# ---- figures --------------------------------------------------------------------------------------------
def _stage(name: str) -> str:
    """code2wav's part an activation belongs to: code_embedding, pre_transformer, upsample, decoder, waveform."""
    return name.split(".")[1] if "." in name else "waveform"


def drift_order_figure(report: Code2WavQuantReport):
    """NMSE and 1 - cosine of every activation in execution order (log scale), one colour per part of the
    vocoder: where along its chain of blocks Q8_0's error enters and grows. Exact zeros (the code embedding,
    which stays BF16; everything, when no code2wav weight is Q8_0) have no place on a log axis: they are
    counted in the title instead of drawn at a floor that would flatten the rest."""
    rows = [r for r in report.drift.rows if r.compared]
    fig = figures.new_figure(11, 4.2)
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("nmse", "cosine")):
        by_stage: dict[str, list[tuple[int, float]]] = {}
        zeros = 0
        for i, r in enumerate(rows):
            y = r.nmse if metric == "nmse" else 1.0 - r.cosine
            if y == 0:
                zeros += 1
                continue
            by_stage.setdefault(_stage(r.name), []).append((i, y))
        for stage, pts in by_stage.items():
            ax.plot(*zip(*pts), "o", ms=3.5, label=stage)
        ax.set_yscale("log")
        ax.set_xlabel("activation, in execution order")
        ax.set_title(figures.METRIC_LABELS[metric] + (f" ({zeros} of {len(rows)} exactly 0, not drawn)" if zeros else ""))
        ax.grid(True, which="major", alpha=0.3)
        if by_stage:
            ax.legend(fontsize=8)
    fig.suptitle("Activation drift through code2wav: Q8_0 weights against BF16 weights, both on our kernels")
    return fig


def waveform_png(report: Code2WavQuantReport):
    return figures.waveform_detail(report.wave_q, report.wave_ref, PREFIX, report.sample_rate, labels=SIDE_LABELS)


FIGURES = (("waveform.png", "The waveform, Q8_0 against BF16: overlay, zoom, difference, log-mel spectrograms",
            waveform_png),
           ("drift.png", "Activation drift in execution order (log scale)", drift_order_figure),
           ("sqnr.png", "Weight SQNR per tensor, sorted", sqnr_figure))


# ---- files ----------------------------------------------------------------------------------------------
def render_html(report: Code2WavQuantReport, images: list[tuple[str, str]], title: str) -> str:
    e = html.escape
    q, t = report.codes.shape
    b, m = report.bounds, report.waveform
    metric_rows = "".join(
        f"<tr><th class='name'>{e(label + (' (dB)' if key.endswith('_db') else ''))}</th><td>{e(_db(m[key]))}</td>"
        f"<td>{e(f'{op} {bound_of(b, key):g}' if op and bound_of(b, key) is not None else '')}</td></tr>"
        for key, label, op in METRICS)
    players = player(f"{SIDE_LABELS[0]} (reference)", WAV_FILES["bf16"]) + player(SIDE_LABELS[1], WAV_FILES["q8_0"])
    group_rows = "".join(f"<tr><td class='name'>{e(g)}</td><td>{s['quantized']}</td><td>{fmt(s['min_db'], '.2f')}</td>"
                         f"<td>{fmt(s['median_db'], '.2f')}</td><td>{fmt(s['max_db'], '.2f')}</td>"
                         f"<td class='name'>{e(s['min_name'] or '—')}</td></tr>" for g, s in report.groups.items())
    kept_rows = "".join(f"<tr><td class='name'>{e(reason)}</td><td>{len(names)}</td>"
                        f"<td class='name'>{e(', '.join(names[:3]) + (', ...' if len(names) > 3 else ''))}</td></tr>"
                        for reason, names in report.kept.items())
    notes = "".join(f"<li>{e(n)}</li>" for n in report.notes)
    inputs = (f"codec codes [{q}, {t}]: {t} frames, {report.wave_ref.size} samples "
              f"({report.wave_ref.size / report.sample_rate:.2f} s at {report.sample_rate} Hz)")
    body = f"""{meta_table(report, inputs, report.timing)}
<h2>The waveform, Q8_0 against BF16</h2>
<table><tr><th class="name">measure</th><th>Q8_0 against BF16</th><th>bound ({BOUNDS})</th></tr>{metric_rows}</table>
<h2>Listen</h2>
<h3><code>{e(PREFIX)}</code> at {report.sample_rate} Hz</h3>
{players}
<ul>{notes}</ul>
<h2>Figures</h2>
{images_html(images)}
<h2>Weight SQNR by group</h2>
<table><tr><th class="name">group</th><th>Q8_0 tensors</th><th>min (dB)</th><th>median (dB)</th><th>max (dB)</th>
<th class="name">worst</th></tr>{group_rows}</table>
<h2>code2wav's weights that stayed as stored</h2>
<table><tr><th class="name">why</th><th>tensors</th><th class="name">e.g.</th></tr>{kept_rows}</table>
{drift_table(report.drift, notes=True)}
{sqnr_section(report)}"""
    verdict = f"{both_ours_html(report)}<br>The waveform is {e(report.verdict())}."
    return page(title, verdict, body, passed=report.passed)


def write_code2wav_quant_report(report: Code2WavQuantReport, out_dir: str | Path, *, title: str = TITLE) -> Path:
    """Both WAV files, the PNGs, report.json and index.html into out_dir (quant_report.write_pages); returns
    index.html."""
    sounds = [(WAV_FILES["bf16"], report.wave_ref, report.sample_rate), (WAV_FILES["q8_0"], report.wave_q, report.sample_rate)]
    return write_pages(report, Path(out_dir), FIGURES, render_html, title, sounds)
