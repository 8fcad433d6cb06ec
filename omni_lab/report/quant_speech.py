"""The quantization report of speech: what Q8_0 does to what Qwen3-Omni says, both sides on OUR kernels.

`speech_quant_report(src_dir, gguf_path, ids, out_dir)`, which `omni-lab quant-report --speak` calls:
1. weights: the SQNR of every tensor (compare/quant.py weight_sqnr, which refuses a GGUF that is not a
   quantization of the checkpoint before any model runs), summarised per part of the speech pipeline;
2. the prompt spoken greedily (thinker and talker) by the BF16 checkpoint and by the GGUF (models/speech.py):
   the answer's text ids, the codec codes [frames, 16] and the waveform of each;
3. codec-token agreement of the GGUF's speech with BF16's, per codebook and per frame, and the waveforms'
   SNR, SI-SDR and log-mel distance over the samples both sides made (the frame counts can differ: a side
   that reaches the codec EOS earlier stops earlier; the report says so);
4. per-component sensitivity: for each part (PARTS) a GGUF with only that part quantized, made by the quantizer
   with `--keep` patterns of the other parts, spoken and measured the same way; the parts ranked by how far
   each moves the speech, and the `omni-lab quantize --keep` patterns that keep the sensitive ones in BF16;
5. report.json, the WAV files, PNG figures and index.html with a player per side, each written atomically.

The ranking is by codec-token agreement first (what is said; a frame that one side did not make counts as
different), then by log-mel distance of the waveform (what it sounds like), which is what separates code2wav:
it cannot change a token, only the sound. Greedy decoding turns small changes into different tokens only at
near ties, and a different token changes every frame after it, so agreement on random tiny weights (with
near ties everywhere) says much less than on trained ones.
"""

from __future__ import annotations

import fnmatch
import gc
import html
import math
import shlex
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..compare import WAVEFORM_BOUNDS, waveform_metrics
from ..compare.quant import TensorSqnr, sqnr_summary, weight_sqnr
from ..models.code2wav import SAMPLE_RATE
from ..ops.q8_0 import prefill_note
from . import figures
from .html import player
from .quant_report import (BothSides, both_ours_html, finite_or_none, fmt, images_html, low_sqnr_notes, meta_table,
                           page, sides_note, sqnr_figure, sqnr_section, write_pages)

# The parts of the speech pipeline as checkpoint keys (fnmatch patterns, `*` crossing dots, as `--keep` takes
# them). The talker is its decoder, its codec head and the two projections from thinker space; the code
# predictor sits under talker. but is its own model (`talker.model.*` does not match its keys).
PARTS = (
    ("thinker", ("thinker.*",)),
    ("talker", ("talker.model.*", "talker.codec_head.*", "talker.text_projection.*", "talker.hidden_projection.*")),
    ("code_predictor", ("talker.code_predictor.*",)),
    ("code2wav", ("code2wav.*",)),
)
Q8_0 = "Q8_0"  # the name of the GGUF's own side (every part quantized as it was made)
# A part whose quantization alone leaves fewer of the codec tokens as BF16's is called sensitive (and so is
# code2wav when its waveform breaks WAVEFORM_BOUNDS["q8_0"]; it cannot change a token). A starting value, not
# measured on the released weights.
SENSITIVE_BELOW = 0.95
TITLE = "omni_lab: speech, Q8_0 against BF16 (both on our kernels)"


def part_of(name: str) -> str | None:
    """The part (PARTS) a checkpoint key belongs to; None for a key of none."""
    return next((p for p, pats in PARTS if any(fnmatch.fnmatchcase(name, q) for q in pats)), None)


def keep_all_but(part: str) -> tuple[str, ...]:
    """The `--keep` patterns that leave every part but `part` in BF16."""
    return tuple(q for p, pats in PARTS if p != part for q in pats)


def keep_command(parts: list[str]) -> str:
    """The `omni-lab quantize` command that keeps `parts` in BF16 and quantizes the rest."""
    pats = [q for p, ps in PARTS if p in parts for q in ps]
    return "omni-lab quantize SRC OUT.gguf" + ("" if not pats else " --keep " + " ".join(map(shlex.quote, pats)))


# ---- measuring ------------------------------------------------------------------------------------------
def codec_agreement(codes: np.ndarray, ref: np.ndarray) -> dict:
    """How many codec codes of `codes` [frames, 16] equal the reference's `ref` [frames', 16]: per codebook
    and per frame over the frames both have, `overall` over the longer of the two (a frame only one side made
    counts as 16 different codes), and the first frame with a difference (None: none)."""
    n = min(len(codes), len(ref))
    same = np.asarray(codes)[:n] == np.asarray(ref)[:n]  # [n, 16]
    longer = max(len(codes), len(ref))
    differs = np.flatnonzero(~same.all(axis=1))
    first = int(differs[0]) if differs.size else (n if len(codes) != len(ref) else None)
    return {"per_codebook": same.mean(axis=0).tolist() if n else [math.nan] * np.shape(ref)[1],
            "per_frame": same.mean(axis=1).tolist(),
            "overall": float(same.sum() / (longer * same.shape[1])) if longer else 1.0,
            "frames": [int(len(codes)), int(len(ref))], "first_different_frame": first}


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first index where two token lists differ (the shorter one's end included); None when equal."""
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


@dataclass
class Spoken:
    """One side's speech: the answer, its codes [frames, 16] and waveform [samples]."""
    path: Path
    text_ids: list[int]
    codes: np.ndarray = field(repr=False)
    wave: np.ndarray = field(repr=False)
    seconds: float


def speak_side(path: str | Path, ids: np.ndarray, speaker: str, max_new_tokens: int, max_frames: int,
               progress: bool = False) -> Spoken:
    """Load the speech parts of `path` (a checkpoint or GGUF), speak `ids` greedily and vocode; the model is
    freed before returning, so the next side's weights do not sit beside it."""
    from ..models.speech import Speech

    t0 = time.perf_counter()
    # One cache length for all: the thinker holds prompt + answer, the talker its prompt (at most the prompt's
    # rows + 9) + the frames.
    speech = Speech(path, max_len=len(ids) + max_new_tokens + max_frames + 9, progress=progress)
    try:
        r = speech.speak(ids, speaker, max_new_tokens, max_frames, greedy=True)
        wave = speech.vocode(r.codes) if len(r.codes) else np.zeros(0, np.float32)
        return Spoken(Path(path), list(r.text_ids), r.codes, wave, time.perf_counter() - t0)
    finally:
        del speech
        gc.collect()


@dataclass
class Variant:
    """A quantized side against the BF16 side: the GGUF given (Q8_0), or one part quantized alone."""
    name: str
    keep: tuple[str, ...]  # the --keep patterns it was made with (the given GGUF's are not known: ())
    spoken: Spoken
    agreement: dict        # codec_agreement against BF16
    text_diff: int | None  # first_difference of the answers
    waveform: dict         # waveform_metrics over the samples both made ({} when one made none)
    compared_samples: int

    @classmethod
    def measure(cls, name: str, keep: tuple[str, ...], spoken: Spoken, ref: Spoken) -> "Variant":
        n = min(spoken.wave.size, ref.wave.size)
        m = waveform_metrics(spoken.wave[:n], ref.wave[:n], SAMPLE_RATE) if n else {}
        return cls(name, keep, spoken, codec_agreement(spoken.codes, ref.codes),
                   first_difference(spoken.text_ids, ref.text_ids), m, n)

    @property
    def mel(self) -> float:
        """Log-mel distance for the ranking; NaN (a broken waveform) and no overlap rank as moved most."""
        v = self.waveform.get("mel_distance_db", math.inf)
        return math.inf if math.isnan(v) else v

    @property
    def sensitive(self) -> bool:
        if self.agreement["overall"] < SENSITIVE_BELOW:
            return True
        # With every code equal (code2wav's case) the waveform decides.
        return self.agreement["overall"] == 1.0 and bool(self.waveform) \
            and bool(WAVEFORM_BOUNDS["q8_0"].violations(self.waveform))

    def to_json(self, file: str) -> dict:
        return {"name": self.name, "keep": list(self.keep), "text_ids": self.spoken.text_ids,
                "first_text_difference": self.text_diff, "codes": self.spoken.codes.tolist(),
                "agreement": {k: ([finite_or_none(x) for x in v] if isinstance(v, list) else finite_or_none(v))
                              for k, v in self.agreement.items()},
                "waveform": {k: finite_or_none(v) for k, v in self.waveform.items()},
                "compared_samples": self.compared_samples, "samples": int(self.spoken.wave.size),
                "sensitive": self.sensitive, "file": file, "seconds": self.spoken.seconds}


@dataclass
class SpeechQuantReport(BothSides):
    src: Path
    gguf: Path
    model_type: str
    ids: np.ndarray = field(repr=False)
    speaker: str
    max_new_tokens: int
    max_frames: int
    weights: list[TensorSqnr] = field(repr=False)
    bf16: Spoken
    q8: Variant
    parts: list[Variant]   # one per part quantized alone, in PARTS order (empty: sensitivity not measured)
    adapter: dict
    notes: list[str]
    timing: dict = field(default_factory=dict)
    drift: object = None   # no activation drift in this report (BothSides names it)
    index: Path | None = None

    @property
    def ranking(self) -> list[Variant]:
        """The parts, the one that moves the speech most first (module docstring)."""
        return sorted(self.parts, key=lambda v: (v.agreement["overall"], -v.mel))

    @property
    def sensitive(self) -> list[str]:
        return [v.name for v in self.ranking if v.sensitive]

    @property
    def part_weights(self) -> dict[str, dict]:
        """sqnr_summary per part, with its share of the checkpoint's values (what keeping it in BF16 costs)."""
        total = sum(math.prod(t.shape) for t in self.weights) or 1
        out = {}
        for p, _ in PARTS:
            mine = [t for t in self.weights if part_of(t.name) == p]
            out[p] = {**sqnr_summary(mine), "share": sum(math.prod(t.shape) for t in mine) / total}
        return out

    @property
    def variants(self) -> list[Variant]:
        return [self.q8, *self.parts]

    def to_json(self) -> dict:
        from ..reference.store import library_versions

        return {
            **self.head_json(),
            "component": "speech",
            "inputs": {"prompt_ids": self.ids.tolist(), "speaker": self.speaker, "max_new_tokens": self.max_new_tokens,
                       "max_frames": self.max_frames, "greedy": True},
            "bf16": {"text_ids": self.bf16.text_ids, "codes": self.bf16.codes.tolist(), "frames": len(self.bf16.codes),
                     "samples": int(self.bf16.wave.size), "file": WAV_FILE.format("bf16"),
                     "seconds": self.bf16.seconds},
            "variants": [v.to_json(WAV_FILE.format(v.name.lower())) for v in self.variants],
            "ranking": [v.name for v in self.ranking],
            "sensitive": self.sensitive,
            "sensitive_below": SENSITIVE_BELOW,
            "suggested_keep": [q for p, ps in PARTS if p in self.sensitive for q in ps],
            "command": keep_command(self.sensitive) if self.sensitive else None,
            "weights": {"summary": self.weight_summary, "parts": self.part_weights,
                        "tensors": [t.to_json() for t in self.weights]},
            "sample_rate": SAMPLE_RATE,
            "notes": self.notes,
            "timing": self.timing,
            "versions": library_versions(),
        }

    def advice(self) -> str:
        """Which parts to keep in BF16, as the quantize command (or that none needs to be)."""
        if not self.parts:
            return "per-part sensitivity not measured"
        if self.sensitive:
            return f"keep {', '.join(self.sensitive)} in BF16: {keep_command(self.sensitive)}"
        top = self.ranking[0].name
        return (f"no part alone moves the speech past the bounds; the most sensitive is {top} "
                f"({keep_command([top])})")

    def summary(self) -> str:
        q, b = self.q8, self.bf16
        a = q.agreement
        lines = [f"Q8_0 vs BF16 speech, greedy, on our kernels ({self.adapter_name}): "
                 f"{len(b.codes)} frames BF16, {len(q.spoken.codes)} Q8_0",
                 f"  {Q8_0:14s} {_said(q)}",
                 "  per codebook: " + " ".join(f"{100 * x:.0f}" for x in a["per_codebook"]) + " (% equal)"]
        if self.parts:
            lines.append("  one part quantized at a time, moved most first:")
            lines += [f"  {v.name:14s} {_said(v)}{'  SENSITIVE' if v.sensitive else ''}" for v in self.ranking]
        lines.append(f"  {self.advice()}")
        return "\n".join(lines)


def _said(v: Variant) -> str:
    """A variant in one line: agreement, text, waveform."""
    a, m = v.agreement, v.waveform
    text = "same answer" if v.text_diff is None else f"answer differs from token {v.text_diff}"
    frames = "" if a["frames"][0] == a["frames"][1] else f" ({a['frames'][0]} frames vs {a['frames'][1]})"
    wave = (f"SNR {_db(m['snr_db'])} dB, SI-SDR {_db(m['si_sdr_db'])} dB, mel {fmt(m['mel_distance_db'], '.3g')} dB "
            f"over {v.compared_samples} samples") if m else "no waveform to compare"
    return f"codes {100 * a['overall']:.1f}% equal{frames}, {text}; {wave}"


def _db(v) -> str:
    return "inf" if v == math.inf else fmt(v, ".1f")


def speech_quant_report(src_dir: str | Path, gguf_path: str | Path, ids, out_dir: str | Path | None = None, *,
                        speaker: str = "Ethan", max_new_tokens: int = 64, max_frames: int = 64,
                        sensitivity: bool = True, work_dir: str | Path | None = None,
                        progress: bool = False) -> SpeechQuantReport:
    """Speak the chat prompt `ids` with the checkpoint `src_dir` and with its GGUF `gguf_path`, measure the
    difference and, with `sensitivity`, each part quantized alone (its GGUF made in a temporary folder in
    `work_dir`, default out_dir or the system's, and deleted once spoken); write the report into `out_dir`."""
    from ..formats.quantize import quantize_checkpoint
    from ..formats.safetensors_io import Checkpoint
    from ..gpu import runtime
    from ..workbench import model_type

    src, gguf = Path(src_dir), Path(gguf_path)
    if not gguf.is_file():
        raise FileNotFoundError(f"{gguf}: no such GGUF file")
    ids = np.asarray(ids, np.int64).reshape(-1)
    if sensitivity:
        # A key of no part would be quantized in every variant and blur which part moved the speech.
        stray = [n for n in Checkpoint(src).names if part_of(n) is None]
        if stray:
            raise ValueError(f"{src}: {len(stray)} tensors belong to no part of the speech pipeline "
                             f"(e.g. {stray[0]}); quant_speech.PARTS needs a pattern for them")
    timing = {}
    t0 = time.perf_counter()
    weights = weight_sqnr(src, gguf, progress=progress)  # refuses a mismatched pair before anything runs
    timing["weights_s"] = time.perf_counter() - t0
    bf16 = speak_side(src, ids, speaker, max_new_tokens, max_frames, progress)  # also checks speaker and ids
    timing["bf16_s"] = bf16.seconds
    q8 = Variant.measure(Q8_0, (), speak_side(gguf, ids, speaker, max_new_tokens, max_frames, progress), bf16)
    timing["q8_0_s"] = q8.spoken.seconds
    parts = []
    if sensitivity:
        root = Path(work_dir) if work_dir else Path(out_dir) if out_dir else None
        if root:
            root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root, prefix=".variants-") as tmp:
            for part, _ in PARTS:
                t0 = time.perf_counter()
                keep = keep_all_but(part)
                path = Path(tmp) / f"{part}.gguf"
                with np.errstate(all="ignore"):  # gguf divides by zero scales of all-zero blocks (and handles it)
                    quantize_checkpoint(src, path, keep=keep, progress=progress)
                parts.append(Variant.measure(part, keep, speak_side(path, ids, speaker, max_new_tokens, max_frames,
                                                                    progress), bf16))
                path.unlink()  # a variant is as large as the GGUF: one at a time on disk
                timing[f"{part}_s"] = time.perf_counter() - t0
    gpu = runtime().gpu.describe()
    report = SpeechQuantReport(src=src, gguf=gguf, model_type=model_type(src), ids=ids, speaker=speaker,
                               max_new_tokens=max_new_tokens, max_frames=max_frames, weights=weights, bf16=bf16,
                               q8=q8, parts=parts, adapter=gpu, notes=[], timing=timing)
    report.notes = [sides_note(gpu), *_notes(report), *low_sqnr_notes(weights)]
    if out_dir is not None:
        write_speech_quant_report(report, out_dir)
    return report


def _notes(report: SpeechQuantReport) -> list[str]:
    out = [f"Greedy thinker and talker. The thinker's prompt ran the prefill matmul ({prefill_note()}); every later "
           "step (the answer's tokens, the talker's frames, the code predictor's 15 steps a frame) is one row and "
           "ran the Q8_0 decode matvec the tuning table picks, whose dot4 path rounds the activations to int8 too: "
           "this is Q8_0 as it speaks, not the weights' error alone."]
    for v in report.variants:
        f = v.agreement["frames"]
        if f[0] != f[1]:
            out.append(f"{v.name}: {f[0]} frames against BF16's {f[1]} (one side reached the codec EOS or max_frames "
                       f"first); per-codebook agreement and the waveform are over the {min(f)} frames both made, the "
                       "overall agreement counts the others as different.")
        if v.text_diff is not None:
            out.append(f"{v.name}: the thinker's answer differs from BF16's from token {v.text_diff} on, so the talker "
                       "spoke a different text from there.")
    return out


# ---- figures --------------------------------------------------------------------------------------------
OFFSET = 1.0  # percentage points between the lines of agreement_figure


def agreement_figure(report: SpeechQuantReport):
    """Codec-token agreement per codebook (left) and per frame (right), one line per side against BF16. The lines
    are offset by OFFSET points each, so that sides with the same agreement (often all 100%) stay visible."""
    fig = figures.new_figure(12, 4.2)
    left, right = fig.subplots(1, 2)
    for i, (v, marker) in enumerate(zip(report.variants, "osD^v")):
        label = "Q8_0 (all parts)" if v.name == Q8_0 else f"only {v.name}"
        style = dict(lw=2.2, color="black") if v.name == Q8_0 else dict(lw=1.2, ls="--")
        dy = (i - (len(report.variants) - 1) / 2) * OFFSET
        pc = 100 * np.array(v.agreement["per_codebook"]) + dy
        left.plot(np.arange(pc.size), pc, marker=marker, ms=4, label=label, **style)
        pf = 100 * np.array(v.agreement["per_frame"]) + dy
        right.plot(np.arange(pf.size), pf, marker=marker, ms=3, label=label, **style)
    left.set_xlabel("codebook (0: the talker's; 1-15: the code predictor's)")
    left.set_xticks(range(len(report.q8.agreement["per_codebook"])))
    right.set_xlabel("frame (80 ms each in the released model)")
    for ax, what in ((left, "per codebook, over the frames both made"), (right, "per frame, of 16 codes")):
        ax.set_ylabel("% of codes equal to BF16's")
        ax.set_ylim(-5, 105)
        ax.set_title(f"Codec-token agreement {what}\n(lines offset by {OFFSET:g} points each to stay visible)",
                     fontsize=10)
        ax.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    return fig


def waveform_png(report: SpeechQuantReport):
    n = report.q8.compared_samples
    return figures.waveform_detail(report.q8.spoken.wave[:n], report.bf16.wave[:n], "speech", SAMPLE_RATE,
                                   labels=("BF16", "Q8_0"))


# ---- files ----------------------------------------------------------------------------------------------
WAV_FILE = "speech_{}.wav"  # bf16, q8_0, or a part's name


def _variant_rows(report: SpeechQuantReport) -> str:
    e = html.escape
    rows = []
    for v in [report.q8, *report.ranking]:
        a, m = v.agreement, v.waveform
        first = a["first_different_frame"]
        rows.append(f"<tr><td class='name'>{e(v.name if v.name == Q8_0 else 'only ' + v.name)}</td>"
                    f"<td>{a['frames'][0]} / {a['frames'][1]}</td><td>{100 * a['overall']:.1f}%</td>"
                    f"<td>{'—' if first is None else first}</td>"
                    f"<td>{'same' if v.text_diff is None else f'from token {v.text_diff}'}</td>"
                    f"<td>{_db(m.get('snr_db'))}</td><td>{_db(m.get('si_sdr_db'))}</td>"
                    f"<td>{fmt(m.get('mel_distance_db'), '.3g')}</td><td>{'yes' if v.sensitive else ''}</td></tr>")
    return "".join(rows)


def render_html(report: SpeechQuantReport, images: list[tuple[str, str]], title: str) -> str:
    e = html.escape
    cb = len(report.q8.agreement["per_codebook"])
    codebook_rows = "".join(
        f"<tr><td class='name'>{e(v.name)}</td>"
        + "".join(f"<td>{fmt(100 * x, '.0f')}</td>" for x in v.agreement["per_codebook"]) + "</tr>"
        for v in report.variants)
    players = player("BF16 (reference)", WAV_FILE.format("bf16")) + "".join(
        player(v.name if v.name == Q8_0 else f"only {v.name} Q8_0", WAV_FILE.format(v.name.lower()))
        for v in report.variants)
    part_rows = "".join(f"<tr><td class='name'>{e(p)}</td><td class='name'>{e(' '.join(ps))}</td>"
                        f"<td>{100 * report.part_weights[p]['share']:.1f}%</td>"
                        f"<td>{fmt(report.part_weights[p]['median_db'], '.2f')}</td></tr>" for p, ps in PARTS)
    notes = "".join(f"<li>{e(n)}</li>" for n in report.notes)
    inputs = (f"{len(report.ids)} prompt tokens, speaker {e(report.speaker)}, at most {report.max_new_tokens} answer "
              f"tokens and {report.max_frames} frames, greedy")
    body = f"""{meta_table(report, inputs, report.timing)}
<h2>Speech against BF16's</h2>
<p>Agreement counts the codec codes equal to BF16's (a frame only one side made counts as different); the waveform
figures are over the samples both sides made. A part is <i>sensitive</i> when quantizing it alone leaves under
{100 * SENSITIVE_BELOW:.0f}% of the codes, or (code2wav, which cannot change a code) when its waveform breaks the
q8_0 bounds.</p>
<table><tr><th class="name">quantized</th><th>frames (it / BF16)</th><th>codes equal</th><th>first different frame</th>
<th>answer text</th><th>SNR (dB)</th><th>SI-SDR (dB)</th><th>mel distance (dB)</th><th>sensitive</th></tr>
{_variant_rows(report)}</table>
<p><b>{e(report.advice())}</b></p>
<h2>Agreement per codebook (% equal)</h2>
<table><tr><th class="name">quantized</th>{''.join(f'<th>{i}</th>' for i in range(cb))}</tr>{codebook_rows}</table>
<h2>Listen</h2>
<h3>at {SAMPLE_RATE} Hz</h3>
{players}
<h2>Parts</h2>
<table><tr><th class="name">part</th><th class="name">its keys (--keep patterns)</th><th>share of the values</th>
<th>median weight SQNR in the GGUF (dB)</th></tr>{part_rows}</table>
<ul>{notes}</ul>
<h2>Figures</h2>
{images_html(images)}
{sqnr_section(report)}"""
    return page(title, both_ours_html(report), body)


def write_speech_quant_report(report: SpeechQuantReport, out_dir: str | Path, *, title: str = TITLE) -> Path:
    """The WAV files, the PNGs, report.json and index.html into out_dir (quant_report.write_pages); returns
    index.html."""
    sounds = [(WAV_FILE.format("bf16"), report.bf16.wave, SAMPLE_RATE)]
    sounds += [(WAV_FILE.format(v.name.lower()), v.spoken.wave, SAMPLE_RATE) for v in report.variants]
    made = [("agreement.png", "Codec-token agreement with BF16, per codebook and per frame", agreement_figure),
            ("sqnr.png", "Weight SQNR per tensor, sorted", sqnr_figure)]
    if report.q8.compared_samples:
        made.insert(1, ("waveform.png", "The waveform, Q8_0 against BF16 over the samples both made: overlay, zoom, "
                                        "difference, log-mel spectrograms", waveform_png))
    return write_pages(report, Path(out_dir), made, render_html, title, sounds)
