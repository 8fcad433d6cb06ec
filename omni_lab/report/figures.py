"""Matplotlib figures of a Comparison: metrics against layer, per-token error by layer, error histograms.

Figures are built as bare `matplotlib.figure.Figure` objects on an Agg canvas, never through pyplot, so
that saving PNGs needs no display and does not touch the backend a notebook chose. A notebook shows the
returned Figure as it is.

Names are split into (component, layer, kind) by the `.layers.<i>` segment of the module path:
`thinker.model.language_model.layers.3.mlp` is component `thinker.model.language_model`, layer 3, kind
`mlp`; `model.layers.3` is kind `residual` (a layer's output is the residual stream after it). A name with no
`.layers.<i>` is split the same way at its first numeric segment, the index into a module list:
`code2wav.decoder.2` is component `code2wav.decoder`, layer 2, kind `residual` (the block's own output);
`code2wav.upsample.0.1` is component `code2wav.upsample`, layer 0, kind `1`, so that the same sub-module of
every block is one line across the blocks. Names with no index (`model.norm`, `lm_head`,
`thinker.audio_tower.conv_out`) have layer None and belong to the component they start with, else to their
parent module (`thinker.audio_tower`), else to `(other)`.

Per-token panels run over tokens for [tokens, features] activations and over time steps for [channels, time]
ones (a vocoder's convolutions); a flat waveform has its own figures, in seconds at the comparison's sample
rate: waveform_figure (both sides overlaid, a zoom where they differ most, and the difference on its own
scale), spectrogram_figure (the log-mel spectrograms that compare.audio.mel_distance_db averages, and their
difference) and waveform_detail, the two in one figure.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..compare.audio import HOP, SAMPLE_RATE, TOP_DB, log_mel_db, waveform_metrics

LAYER_RE = re.compile(r"^(?P<comp>.+?)\.layers\.(?P<layer>\d+)(?:\.(?P<kind>.+))?$")
INDEX_RE = re.compile(r"^(?P<comp>.+?)\.(?P<layer>\d+)(?:\.(?P<kind>.+))?$")
OTHER = "(other)"
RESIDUAL = "residual"
# Log axes cannot show 0; exact zeros are drawn at this floor and the axis says so.
FLOOR = 1e-30
METRIC_LABELS = {"mse": "MSE", "nmse": "NMSE", "cosine": "1 - cosine", "max_abs": "max |error|"}


@dataclass(frozen=True)
class NameParts:
    component: str
    layer: int | None
    kind: str


def split_names(names: Iterable[str]) -> dict[str, NameParts]:
    """(component, layer, kind) of each name, see the module docstring."""
    names = list(names)
    parts: dict[str, NameParts] = {}
    for n in names:
        m = LAYER_RE.match(n) or INDEX_RE.match(n)
        if m:
            parts[n] = NameParts(m["comp"], int(m["layer"]), m["kind"] or RESIDUAL)
    comps = sorted({p.component for p in parts.values()}, key=len, reverse=True)
    for n in names:
        if n in parts:
            continue
        comp = next((c for c in comps if n.startswith(c + ".")), None) or (n.rpartition(".")[0] or None)
        parts[n] = NameParts(comp, None, n[len(comp) + 1:]) if comp else NameParts(OTHER, None, n)
    return {n: parts[n] for n in names}


def main_component(comparison) -> str | None:
    """The component with the most layer activations (the decoder, for a text model)."""
    counts: dict[str, int] = {}
    for p in split_names(comparison.names).values():
        if p.layer is not None:
            counts[p.component] = counts.get(p.component, 0) + 1
    return max(counts, key=counts.get) if counts else None


def layer_components(comparison) -> list[str]:
    return sorted({p.component for p in split_names(comparison.names).values() if p.layer is not None})


def index_label(comparison, component: str | None) -> str:
    """"layer" for a component indexed by `.layers.<i>`, else "index" (a vocoder's blocks are not layers)."""
    return "layer" if any(n.startswith(f"{component}.layers.") for n in comparison.names) else "index"


def time_major(a: np.ndarray, layout: str) -> np.ndarray:
    """An activation as [tokens or time steps, features or channels]: the transpose of a [channels, time] one."""
    a = np.asarray(a)
    return a.T if layout == "CT" else a


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Written atomically: a browser showing the report never reads a half-written image."""
    from ..atomic import write_bytes

    return write_bytes(path, png_bytes(fig, dpi))


def png_bytes(fig: Figure, dpi: int = 90) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _plotted(metric: str, v):
    """The value drawn for a metric: 1 - cosine for cosine, so that every panel reads 'smaller is better'."""
    v = np.asarray(v, dtype=np.float64)
    return 1.0 - v if metric == "cosine" else v


def _bound(comparison, metric: str, name: str | None = None) -> float | None:
    b = comparison.bounds_for(name) if name else comparison.bounds
    limit = getattr(b, metric)
    if limit is None:
        return None
    return 1.0 - limit if metric == "cosine" else limit


def metrics_vs_layer(comparison, component: str | None = None,
                     metrics: tuple[str, ...] = ("mse", "nmse", "cosine", "max_abs")) -> Figure:
    """One panel per metric (log scale), x = layer, one line per activation kind; out-of-bounds points in red."""
    component = component or main_component(comparison)
    parts = split_names(comparison.names)
    by_kind: dict[str, list] = {}
    for row in comparison.rows:
        p = parts[row.name]
        if row.compared and p.layer is not None and p.component == component:
            by_kind.setdefault(p.kind, []).append((p.layer, row))
    fig = new_figure(11, 6.5)
    axes = fig.subplots(2, (len(metrics) + 1) // 2, squeeze=False).ravel()
    for ax, metric in zip(axes, metrics):
        clipped = False
        for kind, items in by_kind.items():
            items.sort(key=lambda t: t[0])
            x = np.array([layer for layer, _ in items])
            y = _plotted(metric, [r.metric(metric) for _, r in items])
            clipped |= bool((y[np.isfinite(y)] < FLOOR).any())
            y = np.where(np.isfinite(y), np.maximum(y, FLOOR), np.nan)
            ax.plot(x, y, marker="o", ms=3, lw=1.2, label=kind)
            bad = np.array([r.within_bounds is False for _, r in items])
            if bad.any():
                ax.plot(x[bad], np.where(np.isfinite(y[bad]), y[bad], FLOOR), "x", color="red", ms=8, mew=2)
        limit = _bound(comparison, metric)
        if limit is not None:
            ax.axhline(limit, color="red", ls="--", lw=1, label="bound")
        ax.set_yscale("log")
        ax.set_xlabel(index_label(comparison, component))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers and blocks are whole numbers
        ax.set_title(METRIC_LABELS.get(metric, metric) + (f" (0 drawn at {FLOOR:.0e})" if clipped else ""))
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    if by_kind:
        axes[0].legend(fontsize=8)
    fig.suptitle(f"{component or 'no layers'}: ours vs {comparison.dtype or '?'} reference")
    return fig


def _per_token_columns(comparison, kind: str, component: str | None) -> list[tuple[int, object]]:
    """(layer, row) of the rows of one component and kind that have per-token metrics, by layer."""
    parts = split_names(comparison.names)
    return sorted(((parts[r.name].layer, r) for r in comparison.rows
                   if r.compared and r.per_token is not None and parts[r.name].component == component
                   and parts[r.name].kind == kind and parts[r.name].layer is not None), key=lambda c: c[0])


def step_label(comparison, kind: str = RESIDUAL, component: str | None = None) -> str:
    """"time step" when the per-token metrics of this kind run over [channels, time] columns, else "token"."""
    cols = _per_token_columns(comparison, kind, component or main_component(comparison))
    return "time step" if cols and all(r.layout == "CT" for _, r in cols) else "token"


def token_layer_matrix(comparison, kind: str = RESIDUAL, metric: str = "nmse",
                       component: str | None = None) -> tuple[np.ndarray, list[int]]:
    """[tokens, layers] per-token metric of one activation kind (NaN where a row is missing or shorter: the
    time steps of a vocoder's blocks grow block by block)."""
    component = component or main_component(comparison)
    cols = _per_token_columns(comparison, kind, component)
    if not cols:
        return np.zeros((0, 0)), []
    tokens = max(len(r.per_token[metric]) for _, r in cols)
    mat = np.full((tokens, len(cols)), np.nan)
    for j, (_, r) in enumerate(cols):
        v = _plotted(metric, r.per_token[metric])
        mat[: len(v), j] = v
    return mat, [layer for layer, _ in cols]


MAX_TOKEN_LABELS = 64  # rows of a heatmap labelled with their token's text; more would overlap


def token_layer_heatmap(comparison, kind: str = RESIDUAL, metric: str = "nmse",
                        component: str | None = None, tokens: list[str] | None = None) -> Figure:
    """Per-token error of one activation kind, tokens (time steps) down, layers across, log colour scale.
    `tokens`: each row's token text (control characters and newlines shown escaped), up to MAX_TOKEN_LABELS."""
    component = component or main_component(comparison)
    mat, layers = token_layer_matrix(comparison, kind, metric, component)
    fig = new_figure(9, 4.5)
    ax = fig.subplots()
    label = METRIC_LABELS.get(metric, metric)
    if mat.size == 0:
        ax.text(0.5, 0.5, f"no per-token data for kind {kind!r}", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    shown = np.where(np.isfinite(mat), np.maximum(mat, FLOOR), np.nan)
    finite = shown[np.isfinite(shown)]
    lo = finite.min() if finite.size else FLOOR
    hi = finite.max() if finite.size else 1.0
    im = ax.imshow(shown, aspect="auto", interpolation="nearest", cmap="viridis",
                   norm=LogNorm(vmin=lo, vmax=max(hi, lo * 10)))
    ax.set_xticks(range(len(layers)), [str(x) for x in layers], fontsize=7)
    if tokens is not None and len(tokens) == mat.shape[0] <= MAX_TOKEN_LABELS:
        from ..text import printable

        ax.set_yticks(range(len(tokens)), [f"{i} {printable(t, keep='')!r}"[:24] for i, t in enumerate(tokens)],
                      fontsize=6)
    ax.set_xlabel(index_label(comparison, component))
    step = step_label(comparison, kind, component)
    ax.set_ylabel(step)
    fig.colorbar(im, ax=ax, label=label)
    ax.set_title(f"per-{step.replace(' ', '-')} {label} of {kind} ({component})")
    return fig


def error_histogram(ours: np.ndarray, ref: np.ndarray, name: str = "", bins: int = 100) -> Figure:
    """Histogram of ours - ref over all elements of one activation (log counts)."""
    d = (np.asarray(ours, np.float64) - np.asarray(ref, np.float64)).ravel()
    finite = d[np.isfinite(d)]
    fig = new_figure(7, 3.8)
    ax = fig.subplots()
    ax.hist(finite if finite.size else np.zeros(1), bins=bins, color="tab:blue", log=True)
    ax.set_xlabel("ours - ref")
    ax.set_ylabel("elements")
    extra = f", {d.size - finite.size} non-finite" if finite.size < d.size else ""
    mx = np.abs(finite).max() if finite.size else float("nan")
    ax.set_title(f"error of {name}: rms {np.sqrt(np.mean(finite ** 2)) if finite.size else float('nan'):.3g}, "
                 f"max {mx:.3g}{extra}", fontsize=10)
    return fig


ZOOM_S = 0.02  # the zoom panel's span: a few pitch periods of speech, so the wave's shape is visible
SIDES = ("reference", "ours")  # how the waveform figures name (ref, ours) unless told otherwise


def _figure(fig, width: float, height: float):
    return new_figure(width, height) if fig is None else fig


def waveform_figure(ours: np.ndarray, ref: np.ndarray, name: str = "", snr_db: float | None = None,
                    sample_rate: int = SAMPLE_RATE, fig=None, labels: tuple[str, str] = SIDES):
    """A flat signal against time: both sides overlaid, a ZOOM_S window around the largest difference (shaded in
    the first panel), and ours - ref on its own axis, so that a 1e-6 difference is as visible as a 0.1 one.
    Draws into `fig` (a Figure or SubFigure) when given; returns it. `labels` names (ref, ours)."""
    ref_label, ours_label = labels
    ours, ref = np.ravel(ours), np.ravel(ref)
    fig = _figure(fig, 11, 6.5)
    a1, a2, a3 = fig.subplots(3, 1)
    t = np.arange(ref.size) / sample_rate
    d = ours.astype(np.float64) - ref
    worst = int(np.nanargmax(np.abs(d))) if np.isfinite(d).any() else 0
    half = max(int(ZOOM_S * sample_rate / 2), 1)
    lo, hi = max(worst - half, 0), min(worst + half, ref.size)
    for ax, sl in ((a1, slice(None)), (a2, slice(lo, hi))):
        ax.plot(t[sl], ref[sl], lw=0.8, label=ref_label)
        ax.plot(t[sl], ours[sl], lw=0.8, ls="--", label=ours_label)
        ax.set_ylabel("amplitude")
    if ref.size:
        a1.axvspan(t[lo], t[hi - 1], color="tab:orange", alpha=0.25, lw=0)
    a1.set_title(f"{name}: {ref.size} samples, {ref.size / sample_rate:.3f} s at {sample_rate} Hz"
                 + (f", SNR {snr_db:.1f} dB" if snr_db is not None else ""), fontsize=10)
    a1.legend(fontsize=8, loc="upper right")
    a2.set_title(f"zoom: {ZOOM_S * 1000:.0f} ms around the largest difference (shaded above)", fontsize=10)
    a3.plot(t, d, lw=0.8, color="tab:red")
    finite = d[np.isfinite(d)]
    if finite.size and not finite.any():
        a3.set_title(f"{ours_label} - {ref_label}: identical (all zero)", fontsize=10)
    else:
        mx = np.abs(finite).max() if finite.size else math.nan
        bad = f", {d.size - finite.size} non-finite" if finite.size < d.size else ""
        a3.set_title(f"{ours_label} - {ref_label}, on its own scale: max |d| {mx:.3g} at {worst / sample_rate:.4f} s{bad}",
                     fontsize=10)
    a3.set_xlabel("time (s)")
    return fig


def spectrogram_figure(ours: np.ndarray, ref: np.ndarray, name: str = "", sample_rate: int = SAMPLE_RATE, fig=None,
                       labels: tuple[str, str] = SIDES):
    """The log-mel power spectrograms of the reference and ours side by side (one colour scale, TOP_DB deep), and
    ours - ref in dB: exactly what compare.audio.mel_distance_db averages the magnitude of. Draws into `fig` (a
    Figure or SubFigure) when given; returns it. `labels` names (ref, ours)."""
    ref_label, ours_label = labels
    ours, ref = np.ravel(ours).astype(np.float64), np.ravel(ref).astype(np.float64)
    fig = _figure(fig, 11, 3.8)
    axes = fig.subplots(1, 3, sharey=True)
    if not ref.size or not (np.isfinite(ours).all() and np.isfinite(ref).all()):
        axes[1].text(0.5, 0.5, "no spectrogram: empty or non-finite samples", ha="center", va="center",
                     transform=axes[1].transAxes)
        for ax in axes:
            ax.set_axis_off()
        return fig
    lo_db, ref_db = log_mel_db(ours, ref, sample_rate)
    frames = ref_db.shape[1]
    # frame t is centred on sample t HOP
    extent = (-HOP / 2 / sample_rate, (frames - 0.5) * HOP / sample_rate, 0, ref_db.shape[0])
    top = max(ref_db.max(), lo_db.max())
    for ax, m, label in ((axes[0], ref_db, ref_label), (axes[1], lo_db, ours_label)):
        im = ax.imshow(m, origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=top - TOP_DB, vmax=top,
                       interpolation="nearest")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("time (s)")
    fig.colorbar(im, ax=axes[:2], label="mel power (dB)")
    diff = lo_db - ref_db
    span = max(float(np.abs(diff).max()), 1e-12)  # a symmetric scale; identical spectrograms draw white
    im = axes[2].imshow(diff, origin="lower", aspect="auto", extent=extent, cmap="RdBu_r", vmin=-span, vmax=span,
                        interpolation="nearest")
    fig.colorbar(im, ax=axes[2], label=f"{ours_label} - {ref_label} (dB)")
    axes[2].set_title(f"difference: mean |d| {np.abs(diff).mean():.3g} dB", fontsize=10)
    axes[2].set_xlabel("time (s)")
    axes[0].set_ylabel(f"mel band (0 to {sample_rate / 2000:g} kHz)")
    fig.suptitle(f"{name}: log-mel spectrograms", fontsize=10)
    return fig


def waveform_detail(ours: np.ndarray, ref: np.ndarray, name: str = "", sample_rate: int = SAMPLE_RATE,
                    labels: tuple[str, str] = SIDES) -> Figure:
    """waveform_figure above spectrogram_figure, under the three dB figures of the pair; `labels` names (ref, ours)."""
    m = waveform_metrics(np.ravel(ours), np.ravel(ref), sample_rate)
    fig = new_figure(11, 10.5)
    top, bottom = fig.subfigures(2, 1, height_ratios=[6.5, 4])
    waveform_figure(ours, ref, name, m["snr_db"], sample_rate, fig=top, labels=labels)
    spectrogram_figure(ours, ref, name, sample_rate, fig=bottom, labels=labels)
    fig.suptitle(f"{name}: SNR {m['snr_db']:.1f} dB, SI-SDR {m['si_sdr_db']:.1f} dB, "
                 f"mel distance {m['mel_distance_db']:.3g} dB, max |err| {m['max_abs']:.3g}")
    return fig


def activation_detail(ours: np.ndarray, ref: np.ndarray, token: int, name: str = "",
                      per_token: dict | None = None, metric: str = "nmse", layout: str = "TF",
                      sample_rate: int = SAMPLE_RATE) -> Figure:
    """For one activation: both sides' values at one token (time step, for layout "CT"), their difference,
    and the per-token metric; a flat signal (layout "N") is drawn whole by waveform_detail, at sample_rate."""
    if layout == "N":
        return waveform_detail(ours, ref, name, sample_rate)
    ours, ref = time_major(ours, layout), time_major(ref, layout)
    step = "time step" if layout == "CT" else "token"
    token = int(np.clip(token, 0, ref.shape[0] - 1))
    fig = new_figure(11, 6.5)
    a1, a2, a3 = fig.subplots(3, 1)
    x = np.arange(ref.shape[1])
    a1.plot(x, ref[token], lw=1, label="reference")
    a1.plot(x, ours[token], lw=1, ls="--", label="ours")
    a1.set_title(f"{name} {step} {token}: values", fontsize=10)
    a1.legend(fontsize=8)
    a2.plot(x, ours[token] - ref[token], lw=1, color="tab:red")
    a2.set_title("ours - ref", fontsize=10)
    a2.set_xlabel("channel" if layout == "CT" else "feature")
    if per_token is not None:
        v = np.where(np.isfinite(_plotted(metric, per_token[metric])),
                     np.maximum(_plotted(metric, per_token[metric]), FLOOR), np.nan)
        a3.semilogy(np.arange(len(v)), v, marker="o", ms=3)
        a3.axvline(token, color="tab:orange")
        a3.set_title(f"per-{step} {METRIC_LABELS.get(metric, metric)}", fontsize=10)
        a3.set_xlabel(step)
    else:
        a3.set_visible(False)
    return fig
