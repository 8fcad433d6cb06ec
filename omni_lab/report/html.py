"""A comparison as files: report.json, PNG figures and an index.html that shows them with the table of rows.

The page opens with the verdict (the first divergence, or that all activations are within bounds) and the
dtype the reference ran in, because a float32 and a bfloat16 reference call for very different bounds.
Images are referenced by relative path, so the directory can be moved or zipped as a whole.
Rows of ids (and a router's expert ids) show "equal k of n" where float rows show 1 - cosine.
A waveform row adds its figure (waveform, zoom, difference, log-mel spectrograms) and two players, ours and the
reference, playing 32-bit float WAV files written next to the page at the comparison's sample rate.
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

from ..activations import routing_parts
from ..atomic import atomic_dir, write_text
from . import figures
from .audio import write_wav

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.verdict { font-size: 1.15em; padding: .6em .9em; border-radius: 4px; margin: .5em 0 1em; }
.verdict.fail { background: #fde2e1; border: 1px solid #e0a09c; }
.verdict.pass { background: #e3f6e5; border: 1px solid #9ccfa3; }
.dtype { font-weight: bold; }
table { border-collapse: collapse; font-size: .85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
td.name, th.name { text-align: left; font-family: monospace; }
tr.fail td { background: #fde2e1; }
tr.first td { background: #f8b4b0; font-weight: bold; }
tr.missing td { background: #eee; color: #777; }
img { max-width: 100%; border: 1px solid #ddd; margin: .3em 0 1em; }
.player { display: flex; align-items: center; gap: .8em; margin: .3em 0; }
.player span { min-width: 12em; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—" if v is None else str(v)
    return f"{v:.{digits}e}" if isinstance(v, float) else str(v)


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_") or "x"


def _one_minus_cos(v) -> str:
    """1 - cosine: a cosine of 1 - 1e-9 and one of 1 - 1e-4 both print as 1.0000 in any short column."""
    return "—" if v is None or not math.isfinite(v) else f"{1.0 - v:.3e}"


def _float_values(row, a):
    """The part of an activation that the float metrics describe: a router's weights, none of an ids array."""
    if not row.has_float_metrics:
        return None
    return routing_parts(a)[1] if row.kind == "routing" else a


def token_labels(comparison) -> list[str] | None:
    """The prompt's tokens as text, through the checkpoint's tokenizer, where the reference's manifest names
    the prompt ids and the checkpoint and the tokenizer is there (None otherwise: rows keep their numbers)."""
    from ..workbench import tokenizer_for

    m = comparison.manifest or {}
    ids, path = (m.get("inputs") or {}).get("input_ids"), (m.get("model") or {}).get("path")
    if not isinstance(ids, list) or not path:
        return None
    try:
        tok = tokenizer_for(path)
    except (OSError, ValueError):  # no tokenizer files (a GGUF without one, a moved checkpoint)
        return None
    return [tok.decode([i]) for i in ids]


def write_figures(comparison, out_dir: Path, histogram: str | None = None) -> list[tuple[str, str]]:
    """Save the figures of a comparison to out_dir; returns [(file name, caption)]. Waveforms are drawn at the
    comparison's sample rate."""
    saved = []
    comps = figures.layer_components(comparison)
    for comp in comps:
        fname = "metrics_vs_layer.png" if len(comps) == 1 else f"metrics_vs_layer_{_slug(comp)}.png"
        fig = figures.metrics_vs_layer(comparison, comp)
        figures.save_png(fig, out_dir / fname)
        saved.append((fname, f"Metrics against layer, {comp}"))
        mat, _ = figures.token_layer_matrix(comparison, figures.RESIDUAL, "nmse", comp)
        if mat.size:
            fname = "token_heatmap.png" if len(comps) == 1 else f"token_heatmap_{_slug(comp)}.png"
            figures.save_png(figures.token_layer_heatmap(comparison, figures.RESIDUAL, "nmse", comp,
                                                         token_labels(comparison)), out_dir / fname)
            what = ("the residual stream" if figures.index_label(comparison, comp) == "layer"
                    else "each block's output")
            step = figures.step_label(comparison, figures.RESIDUAL, comp).replace(" ", "-")
            saved.append((fname, f"Per-{step} NMSE of {what}, {comp}"))
    for r in comparison.rows:
        if r.compared and r.kind == "waveform":
            fname = f"waveform_{_slug(r.name)}.png"
            fig = figures.waveform_detail(comparison.ours[r.name], comparison.ref[r.name], r.name,
                                          comparison.sample_rate)
            figures.save_png(fig, out_dir / fname)
            saved.append((fname, (f"Waveform {r.name}, ours against the reference: overlay, zoom, difference, "
                                  "log-mel spectrograms")))
    name = histogram or _histogram_target(comparison)
    if name and name in comparison.ours and name in comparison.ref \
            and comparison.ours[name].shape == comparison.ref[name].shape:
        row = comparison[name]
        a, b = _float_values(row, comparison.ours[name]), _float_values(row, comparison.ref[name])
        if a is not None:
            what = f"{name} (its weights)" if row.kind == "routing" else name
            figures.save_png(figures.error_histogram(a, b, what), out_dir / "error_hist.png")
            saved.append(("error_hist.png", f"Histogram of the error of {what}"))
    return saved


def write_audio(comparison, out_dir: Path) -> list[tuple[str, str, str]]:
    """Write each compared waveform, ours and the reference's, as WAV files in out_dir at the comparison's sample
    rate; returns [(activation name, our file, the reference's file)]."""
    out = []
    for r in comparison.rows:
        if r.compared and r.kind == "waveform":
            files = (f"{_slug(r.name)}_ours.wav", f"{_slug(r.name)}_ref.wav")
            write_wav(out_dir / files[0], comparison.ours[r.name], comparison.sample_rate)
            write_wav(out_dir / files[1], comparison.ref[r.name], comparison.sample_rate)
            out.append((r.name, *files))
    return out


def _histogram_target(comparison) -> str | None:
    """The first divergence if it has float values, else the compared activation with the largest NMSE."""
    fd = comparison.first_divergence
    if fd and fd.row.has_float_metrics:
        return fd.name
    rows = [r for r in comparison.rows if r.compared and math.isfinite(r.nmse)]
    return max(rows, key=lambda r: r.nmse).name if rows else None


def margin(value: float, bound: float) -> str:
    """How far a smaller-is-better value is from its bound, in words that say which side it is on."""
    if value <= 0:
        return f"0, the bound is {bound:g}"
    ratio = bound / value
    return (f"{ratio:.3g}x below the bound {bound:g}" if ratio >= 1 else
            f"{1 / ratio:.3g}x above the bound {bound:g}")


def _headroom(comparison) -> str:
    """How far inside (or outside) its bound the worst compared activation is, per bounded metric ("the
    reports show by how much"); cosine as 1 - cosine, so every figure reads smaller-is-better. Waveforms,
    judged by their own bounds, by their dB figures."""
    rows = [r for r in comparison.rows if r.compared and math.isfinite(r.mse) and r.kind != "waveform"]
    parts = []
    b = comparison.bounds
    for label, get, bound in (("MSE", lambda r: r.mse, b.mse), ("NMSE", lambda r: r.nmse, b.nmse),
                              ("1 - cosine", lambda r: 1.0 - r.cosine, None if b.cosine is None else 1.0 - b.cosine),
                              ("max |err|", lambda r: r.max_abs, b.max_abs)):
        if not rows or (bound is None and label not in ("MSE", "1 - cosine")):  # these two shown unbounded too
            continue
        worst = max(rows, key=get)
        parts.append(f"largest {label} {get(worst):.3g} at <code>{html.escape(worst.name)}</code>"
                     + (f" ({margin(get(worst), bound)})" if bound is not None else ""))
    parts += [f"<code>{html.escape(r.name)}</code>: {html.escape(r.waveform_text())}"
              for r in comparison.rows if r.compared and r.kind == "waveform"]
    return "; ".join(parts)


def _waveform_bounds_text(comparison) -> str:
    """The waveform bounds that the waveform rows are judged by, each distinct set once (overrides can differ)."""
    used = dict.fromkeys(comparison.bounds_for(r.name).waveform for r in comparison.rows if r.kind == "waveform")
    texts = []
    for w in used:
        limits = (("SNR", "&ge;", w.snr_db), ("SI-SDR", "&ge;", w.si_sdr_db),
                  ("mel distance", "&le;", w.mel_distance_db))
        parts = [f"{label} {op} {v:g} dB" for label, op, v in limits if v is not None]
        texts.append(", ".join(parts) or "none")
    return "; waveform: " + " / ".join(texts) if texts else ""


def player(label: str, file: str) -> str:
    """One labelled audio player of a WAV file next to the page, with a link to the file."""
    e = html.escape
    return (f"<div class='player'><span>{e(label)}</span><audio controls preload='metadata' src='{e(file)}'>"
            f"</audio><a href='{e(file)}'>{e(file)}</a></div>")


def _players(comparison, audio: list[tuple[str, str, str]]) -> str:
    e = html.escape
    dtype = comparison.dtype or "?"
    out = [f"<h3><code>{e(name)}</code> at {comparison.sample_rate} Hz</h3>" + player("ours", ours)
           + player(f"reference ({dtype})", ref) for name, ours, ref in audio]
    return "<h2>Listen</h2>" + "".join(out) if out else ""


def render_html(comparison, images: list[tuple[str, str]], title: str,
                audio: list[tuple[str, str, str]] = ()) -> str:
    """The page; `audio` lists (waveform name, our WAV file, the reference's) to play, as write_audio gives."""
    m = comparison.manifest or {}
    model = m.get("model") or {}
    e = html.escape
    fd = comparison.first_divergence
    if fd:
        verdict = (f'<div class="verdict fail">First divergence: <code>{e(fd.name)}</code> '
                   f'({e(", ".join(fd.row.violations))}); its input '
                   f'{"<code>" + e(fd.input_name) + "</code>" if fd.input_name else "(none: first activation)"}'
                   + (f" was within bounds ({e(fd.input_row.agreement())})" if fd.input_row is not None
                      and fd.input_row.within_bounds else "")
                   + f'. {len(comparison.failures)} of {len(comparison.rows)} activations out of bounds.</div>')
    else:
        n = sum(r.compared for r in comparison.rows)
        verdict = f'<div class="verdict pass">All {n} compared activations are within bounds.</div>'
    missing = comparison.missing
    missing_html = (f"<p>Missing on one side: {', '.join(f'<code>{e(r.name)}</code> ({e(r.status)})' for r in missing)}"
                    "</p>" if missing else "")
    inputs = m.get("inputs") or {}
    ids = inputs.get("input_ids")
    inputs_text = ", ".join(f"{e(k)}: {len(v)} values" if isinstance(v, list) else f"{e(k)}: {e(json.dumps(v))[:80]}"
                            for k, v in inputs.items()) or "—"
    b = comparison.bounds
    bounds_text = ", ".join(f"{k} {'>' if k == 'cosine' else '<'} {v:g}" for k, v in
                            (("mse", b.mse), ("cosine", b.cosine), ("nmse", b.nmse), ("max_abs", b.max_abs))
                            if v is not None)
    bounds_text += _waveform_bounds_text(comparison)
    bounds_text = ("given: " if comparison.bounds_basis == "given"
                   else f"the defaults for a {e(comparison.bounds_basis)} reference: ") + bounds_text
    if comparison.overrides:
        bounds_text += "; overrides: " + ", ".join(f"<code>{e(k)}</code>" for k in comparison.overrides)
    versions = m.get("versions") or {}
    meta = [
        ("Reference dtype", f'<span class="dtype">{e(str(m.get("dtype", "unknown")))}</span>'),
        ("Model", f"<code>{e(str(model.get('path', '—')))}</code>"),
        ("Weights hash", f"<code>{e(str(model.get('weights_sha256', '—'))[:16])}</code> ({e(str(model.get('hash_mode', '—')))})"),
        ("Config hash", f"<code>{e(str(model.get('config_sha256', '—'))[:16])}</code>"),
        ("Inputs", inputs_text + (f" ({len(ids)} tokens)" if isinstance(ids, list) else "")),
        ("Captured", e(str(m.get("captured_at", "—")))),
        ("Versions", e(", ".join(f"{k} {v}" for k, v in versions.items())) or "—"),
        ("Bounds", bounds_text),
        ("Headroom", _headroom(comparison) or "—"),
    ]
    meta_html = "".join(f"<tr><th class='name'>{k}</th><td class='name'>{v}</td></tr>" for k, v in meta)

    body_rows = []
    for i, r in enumerate(comparison.rows):
        cls = ("first" if fd and r.name == fd.name else "fail" if r.within_bounds is False
               else "missing" if r.status.startswith("missing") else "")
        shape = r.shape_ref or r.shape_ours
        ok = {True: "yes", False: "NO", None: "—"}[r.within_bounds]
        notes = list(r.violations) or ([r.status] if r.status != "compared" else [])
        if r.compared and r.kind == "waveform":
            notes.append(r.waveform_text())
        if (r.kind, r.layout) != ("float", "TF"):
            notes.append(f"{r.kind}, {r.layout}")
        agreement = f"equal {r.equal} of {r.total}" if r.total is not None else _one_minus_cos(r.cosine)
        body_rows.append(
            f"<tr class='{cls}'><td>{i}</td><td class='name'>{e(r.name)}</td><td>{e(str(list(shape)) if shape else '—')}</td>"
            f"<td>{_fmt(r.mse)}</td><td>{agreement}</td><td>{_fmt(r.nmse)}</td><td>{_fmt(r.max_abs)}</td>"
            f"<td>{ok}</td><td class='name'>{e('; '.join(notes))}</td></tr>")
    imgs = "".join(f"<h3>{e(cap)}</h3><img src='{e(f)}' alt='{e(cap)}'>" for f, cap in images)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{e(title)}</title><style>{CSS}</style></head>
<body>
<h1>{e(title)}</h1>
{verdict}
<p>Reference dtype: <span class="dtype">{e(str(m.get("dtype", "unknown")))}</span></p>
{missing_html}
<table>{meta_html}</table>
{_players(comparison, audio)}
<h2>Figures</h2>
{imgs or "<p>No figures (no layer activations).</p>"}
<h2>Activations, in execution order</h2>
<table>
<tr><th>#</th><th class="name">name</th><th>shape</th><th>MSE</th><th>1 &minus; cosine</th><th>NMSE</th><th>max |err|</th>
<th>within bounds</th><th class="name">notes</th></tr>
{"".join(body_rows)}
</table>
<p><a href="report.json">report.json</a></p>
</body></html>
"""


def write_report(comparison, out_dir: str | Path, *, title: str = "omni_lab: ours vs HF Transformers",
                 histogram: str | None = None, extra: dict | None = None, sample_rate: int | None = None) -> Path:
    """Write the PNGs, the waveforms' WAV files, index.html and report.json into out_dir (created); returns the
    index.html path.

    `histogram` names the activation whose error histogram is drawn (default: the first divergence, else the
    activation with the largest NMSE). `extra` adds top-level keys to report.json (timing, model path, ...).
    `sample_rate` is the waveforms' rate for the figures and WAV files. The comparison carries it (compare_sets'
    sample_rate, at which its mel distances were computed), so here it may only restate it: a different rate
    would play and draw the waveforms at a rate their numbers were not measured at, and raises ValueError.
    A new `out_dir`, or one holding only a previous report, is replaced whole: a reader or a killed run sees
    the old report or the new one. Into a folder that holds other files too the report's files are written
    one by one (each atomically), report.json last, so its presence means this report is complete.
    """
    if sample_rate is not None and sample_rate != comparison.sample_rate:
        raise ValueError(f"sample_rate {sample_rate} Hz: the comparison's waveforms were measured at "
                         f"{comparison.sample_rate} Hz (compare_sets(..., sample_rate=))")
    out = Path(out_dir)
    if not holds_only_a_report(out):  # the user's own files beside it: not ours to swap away
        out.mkdir(parents=True, exist_ok=True)
        return _write_report_files(comparison, out, histogram, title, extra)
    with atomic_dir(out) as tmp:
        _write_report_files(comparison, tmp, histogram, title, extra)
    return out / "index.html"


REPORT_SUFFIXES = (".png", ".wav", ".html", ".json")


def holds_only_a_report(out: Path) -> bool:
    """Whether `out` is absent, or a folder of nothing but report files (a previous report): then the new
    report is built beside it and swapped in whole (atomic.atomic_dir), so a run killed at any moment leaves
    the old report or the new one, never the new page over the old report.json or the old run's figures."""
    if not out.exists():
        return True
    if not out.is_dir() or out.resolve() == Path.cwd().resolve():  # a swapped-away cwd would leave the shell nowhere
        return False
    files = list(out.iterdir())
    report = {"index.html", "report.json"} <= {p.name for p in files}  # a folder of someone's own JSON is not one
    return not files or report and all(p.is_file() and p.suffix in REPORT_SUFFIXES for p in files)


def _write_report_files(comparison, out: Path, histogram, title: str, extra) -> Path:
    images = write_figures(comparison, out, histogram)
    audio = write_audio(comparison, out)
    index = out / "index.html"
    write_text(index, render_html(comparison, images, title, audio))
    comparison.save_json(out / "report.json", extra=extra)
    return index
