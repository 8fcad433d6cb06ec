"""Layer-by-layer comparison of two activation sets, and the first activation where they part.

Metrics (float64 arithmetic; `ours` is checked against `ref`):
- mse     = mean((ours - ref)^2)
- cosine  = <ours, ref> / (|ours| |ref|)    (1 when both are all zero, 0 when only one is)
- nmse    = sum((ours - ref)^2) / sum(ref^2) (0 when both are all zero, inf when only ref is)
- max_abs = max |ours - ref|
each over the whole tensor and per token (row). A non-finite value anywhere makes the metrics NaN, which
is never within bounds.

Each activation is read by its type (omni_lab.activations.Activation; "float" / "TF" when none is given):
- kind "ids": compared exactly; the row holds the count of equal entries (`equal` of `total`) and the first
  token (time step) where they differ; any difference is out of bounds. The float metrics stay NaN.
- kind "routing" ([T, 2k]): the expert ids (columns 0..k-1) as "ids", the weights (k..2k-1) by the float
  metrics and bounds; both must hold.
- kind "waveform" (a flat signal at `sample_rate`): the float metrics for the table, and snr_db, si_sdr_db and
  mel_distance_db (omni_lab.compare.audio, which defines them); judged by its own WaveformBounds
  (`Bounds.waveform`: SNR and SI-SDR at least, mel distance at most), not by the float bounds, since MSE
  depends on loudness and cosine / NMSE say less than the dB figures the audio literature reads.
- layout "CT" (channels x time): the per-token metrics run over time steps (columns), so the worst token, the
  first divergence's worst_token and the heatmaps are about time. Layout "N" (a flat signal) has none.

First divergence: the earliest activation, in the reference's execution order, that breaks its bounds.
Its "input" is, by a deliberately simple rule, the activation just before it in that order (for a layer's
residual stream that is the layer's mlp, for layer i+1's self_attn it is layer i's residual stream). Since
every earlier activation was within bounds, the input agreeing and the output not puts the bug in between.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..activations import Activation, as_specs, routing_parts
from .audio import SAMPLE_RATE, WaveformBounds, mel_distance_db, si_sdr_db, snr_db

METRICS = ("mse", "cosine", "nmse", "max_abs")


@dataclass
class Bounds:
    """Pass limits: mse < mse, cosine > cosine, nmse < nmse, max_abs < max_abs; None switches one off.
    A waveform row is judged by `waveform` instead (compare.audio.WAVEFORM_BOUNDS has them by reference)."""

    mse: float | None = 1e-5
    cosine: float | None = 0.999
    nmse: float | None = None
    max_abs: float | None = None
    waveform: WaveformBounds = field(default_factory=WaveformBounds)

    def violations(self, m: Mapping[str, float]) -> list[str]:
        """The broken limits, as text; a NaN metric breaks every limit set on it."""
        out = []
        for key, below in (("mse", True), ("nmse", True), ("max_abs", True), ("cosine", False)):
            limit = getattr(self, key)
            if limit is None:
                continue
            v = m[key]
            ok = (v < limit) if below else (v > limit)  # False for NaN
            if not ok:
                out.append(f"{key} {_distinct(v, limit, 3 if below else 8)} {'>=' if below else '<='} {limit:g}")
        return out


def _distinct(v: float, limit: float, digits: int) -> str:
    """v with enough digits that it does not print as the limit it broke (1.001e-05, not 1e-05 >= 1e-05)."""
    while digits < 17 and float(f"{v:.{digits}g}") == float(f"{limit:.{digits}g}") and v != limit:
        digits += 1
    return f"{v:.{digits}g}"


# The default bounds by the dtype Transformers ran in. float32: our f32 math on the same weights should agree
# far inside them. bfloat16 keeps 8 significant bits, so every rounded op adds a relative error up to 2**-9:
# against a bfloat16 run the tiny dense checkpoint ends each layer at NMSE 4e-5 to 2.3e-4 (cosine >= 0.99988),
# where the float32 MSE bound flags 7 of 9 activations. MSE depends on the activation's scale, so bfloat16 is
# judged by NMSE (1e-3, about 4x the tiny model's worst) and cosine.
DTYPE_BOUNDS = {"float32": Bounds(), "bfloat16": Bounds(mse=None, cosine=0.999, nmse=1e-3)}


def default_bounds(dtype: str | None) -> Bounds:
    return DTYPE_BOUNDS.get(dtype, Bounds())


def _sums(a: np.ndarray, b: np.ndarray, axis):
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    d = a - b
    sq = (d * d).sum(axis=axis)
    n = d.shape[-1] if axis == -1 else d.size
    return {
        "sq": sq, "n": n, "dot": (a * b).sum(axis=axis), "aa": (a * a).sum(axis=axis), "bb": (b * b).sum(axis=axis),
        "max_abs": np.abs(d).max(axis=axis, initial=0.0),
    }


def _finish(s) -> dict:
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = np.sqrt(s["aa"] * s["bb"])  # one sqrt: exactly |a|^2 when a == b, so cosine is exactly 1
        cos = np.where(denom > 0, s["dot"] / np.where(denom > 0, denom, 1.0),
                       np.where((s["aa"] == 0) & (s["bb"] == 0), 1.0, 0.0))
        nmse = np.where(s["bb"] > 0, s["sq"] / np.where(s["bb"] > 0, s["bb"], 1.0),
                        np.where(s["sq"] == 0, 0.0, np.inf))
    bad = ~(np.isfinite(s["sq"]) & np.isfinite(s["aa"]) & np.isfinite(s["bb"]))
    out = {"mse": s["sq"] / max(s["n"], 1), "cosine": np.clip(cos, -1.0, 1.0), "nmse": nmse, "max_abs": s["max_abs"]}
    return {k: np.where(bad, np.nan, v) for k, v in out.items()}


def metrics(ours, ref) -> dict[str, float]:
    """mse, cosine, nmse, max_abs over the whole tensor."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    if ours.shape != ref.shape:
        raise ValueError(f"shapes differ: ours {ours.shape}, ref {ref.shape}")
    return {k: float(v) for k, v in _finish(_sums(ours, ref, None)).items()}


def per_token_metrics(ours, ref) -> dict[str, np.ndarray]:
    """mse, cosine, nmse, max_abs of each token (row) of [tokens, features] arrays; each a [tokens] array.
    For a [channels, time] array pass its transpose."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    if ours.shape != ref.shape or ours.ndim != 2:
        raise ValueError(f"need equal [tokens, features] shapes: ours {ours.shape}, ref {ref.shape}")
    return _finish(_sums(ours, ref, -1))


@dataclass
class Row:
    """One activation of the comparison.

    status: "compared", "missing_in_ours", "missing_in_ref" or "shape_mismatch". within_bounds is None for a
    name present on one side only (nothing to judge), False for a shape mismatch or broken bounds.
    kind and layout are the activation's type (see the module docstring); for "ids" and "routing", equal of
    total counts the ids that agree, and first_unequal is the first token (time step, sample) where one
    differs. per_token runs over tokens for "TF", time steps for "CT"; for "routing" it is of the weights.
    snr_db, si_sdr_db and mel_distance_db are a waveform's (NaN for other kinds).
    """

    name: str
    status: str
    shape_ours: tuple | None = None
    shape_ref: tuple | None = None
    mse: float = math.nan
    cosine: float = math.nan
    nmse: float = math.nan
    max_abs: float = math.nan
    within_bounds: bool | None = None
    violations: list[str] = field(default_factory=list)
    nonfinite_ours: int = 0
    per_token: dict[str, np.ndarray] | None = field(default=None, repr=False)
    kind: str = "float"
    layout: str = "TF"
    equal: int | None = None
    total: int | None = None
    first_unequal: int | None = None
    snr_db: float = math.nan
    si_sdr_db: float = math.nan
    mel_distance_db: float = math.nan

    @property
    def compared(self) -> bool:
        return self.status == "compared"

    @property
    def has_float_metrics(self) -> bool:
        """Whether mse / cosine / nmse / max_abs describe this row (not for ids, which are only counted)."""
        return self.kind != "ids"

    def agreement(self) -> str:
        """The numbers a verdict quotes: equal k of n for ids, NMSE and cosine for floats, both for routing."""
        parts = [f"equal {self.equal} of {self.total}"] if self.total is not None else []
        if self.has_float_metrics:
            parts.append(f"nmse {self.nmse:.3g}, cosine {self.cosine:.6f}")
        if self.kind == "waveform":
            parts.append(self.waveform_text())
        return ", ".join(parts)

    def waveform_text(self) -> str:
        """A waveform's dB figures, as a report quotes them."""
        return (f"SNR {self.snr_db:.1f} dB, SI-SDR {self.si_sdr_db:.1f} dB, "
                f"mel distance {self.mel_distance_db:.3g} dB")

    def metric(self, key: str) -> float:
        return getattr(self, key)

    def to_json(self) -> dict:
        d = {"name": self.name, "status": self.status,
             "shape_ours": list(self.shape_ours) if self.shape_ours else None,
             "shape_ref": list(self.shape_ref) if self.shape_ref else None}
        for k in METRICS:
            v = getattr(self, k)
            d[k] = float(v) if math.isfinite(v) else None  # strict JSON has no NaN / inf
        d.update(within_bounds=self.within_bounds, violations=self.violations, nonfinite_ours=self.nonfinite_ours,
                 kind=self.kind, layout=self.layout, equal=self.equal, total=self.total,
                 first_unequal=self.first_unequal,
                 **{k: float(getattr(self, k)) if math.isfinite(getattr(self, k)) else None
                    for k in ("snr_db", "si_sdr_db", "mel_distance_db")})
        if self.per_token is not None and self.compared:
            worst = int(np.nanargmax(self.per_token["nmse"])) if np.isfinite(self.per_token["nmse"]).any() else None
            d["worst_token"] = worst
        return d


@dataclass
class FirstDivergence:
    """The earliest out-of-bounds activation, its input (the activation before it) and all four values."""

    name: str
    index: int
    row: Row
    input_name: str | None
    input_row: Row | None
    ours: np.ndarray | None = field(repr=False)
    ref: np.ndarray | None = field(repr=False)
    ours_input: np.ndarray | None = field(repr=False)
    ref_input: np.ndarray | None = field(repr=False)

    @property
    def worst_token(self) -> int | None:
        """The token (time step) to look at: the first whose ids differ, else the one with the largest NMSE."""
        if self.row.first_unequal is not None:
            return self.row.first_unequal
        if self.row.per_token is None:
            return None
        nm = self.row.per_token["nmse"]
        return int(np.nanargmax(nm)) if np.isfinite(nm).any() else 0

    def to_json(self) -> dict:
        return {
            "name": self.name, "index": self.index, "violations": self.row.violations,
            "worst_token": self.worst_token, "input": self.input_name,
            "input_metrics": ({k: self.input_row.to_json()[k] for k in (*METRICS, "equal", "total", "within_bounds")}
                              if self.input_row is not None else None),
        }

    def __str__(self) -> str:
        inp = f"; its input {self.input_name}" + (
            f" agrees ({self.input_row.agreement()})"
            if self.input_row is not None and self.input_row.compared else " was not compared") \
            if self.input_name else "; it is the first activation"
        return f"first divergence at {self.name}: {', '.join(self.row.violations)}{inp}"


@dataclass
class Comparison:
    """The result of compare_sets: rows in the reference's execution order, then names only ours has."""

    rows: list[Row]
    bounds: Bounds
    overrides: dict[str, Bounds]
    manifest: dict
    first_divergence: FirstDivergence | None
    ours: Mapping[str, np.ndarray] = field(repr=False, default_factory=dict)
    ref: Mapping[str, np.ndarray] = field(repr=False, default_factory=dict)
    sample_rate: int = SAMPLE_RATE  # of the waveform rows: their mel distance, figures and WAV files
    bounds_basis: str = "given"  # "given", or the reference dtype whose default bounds (DTYPE_BOUNDS) were used

    def __getitem__(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rows]

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if r.within_bounds is False]

    @property
    def missing(self) -> list[Row]:
        return [r for r in self.rows if r.status.startswith("missing")]

    @property
    def passed(self) -> bool:
        """Every compared activation within bounds, and nothing missing on either side."""
        return not self.failures and not self.missing

    @property
    def dtype(self) -> str | None:
        return self.manifest.get("dtype")

    def bounds_for(self, name: str) -> Bounds:
        return bounds_for(name, self.bounds, self.overrides)

    def to_json(self) -> dict:
        """A JSON-serialisable dict: reference manifest, bounds, one entry per activation, first divergence."""
        fd = self.first_divergence
        return {
            "reference": self.manifest,
            "bounds": asdict(self.bounds),
            "bounds_basis": self.bounds_basis,
            "overrides": {k: asdict(v) for k, v in self.overrides.items()},
            "passed": self.passed,
            "activations": [r.to_json() for r in self.rows],
            "first_divergence": fd.name if fd else None,
            "first_divergence_detail": fd.to_json() if fd else None,
            "sample_rate": self.sample_rate,
        }

    def save_json(self, path: str | Path, extra: Mapping | None = None) -> Path:
        """Write to_json(), plus the top-level keys of `extra` (timing, model, ...), in one atomic write: a
        temporary file in the same folder renamed over `path`, so a reader never sees a half-written report."""
        path = Path(path)
        data = self.to_json()
        clash = sorted(set(extra or {}) & set(data))
        if clash:
            raise ValueError(f"extra keys {clash} would overwrite the comparison's own")
        data.update(extra or {})
        from ..atomic import write_text

        return write_text(path, json.dumps(data, indent=1, allow_nan=False) + "\n")

    def summary(self) -> str:
        n = sum(r.compared for r in self.rows)
        basis = "given bounds" if self.bounds_basis == "given" else f"the {self.bounds_basis} default bounds"
        head = f"{n} activations compared against a {self.dtype or '?'} reference ({basis})"
        if self.first_divergence:
            head += f", {len(self.failures)} out of bounds; {self.first_divergence}"
        else:
            head += ", all within bounds"
        if self.missing:
            head += f"; missing: {', '.join(f'{r.name} ({r.status})' for r in self.missing)}"
        return head


def bounds_for(name: str, bounds: Bounds, overrides: Mapping[str, Bounds] | None) -> Bounds:
    """The first override whose glob pattern matches `name`, else the default bounds."""
    for pattern, b in (overrides or {}).items():
        if fnmatch.fnmatchcase(name, pattern):
            return b
    return bounds


def _as_set_and_manifest(s) -> tuple[Mapping[str, np.ndarray], dict]:
    if hasattr(s, "activations") and hasattr(s, "manifest"):  # a store.Reference
        return s.activations, dict(s.manifest)
    return s, {}


SHAPE_NAMES = {"TF": "[tokens, features]", "CT": "[channels, time]", "N": "a flat signal [samples]"}


def _shape_problem(a: np.ndarray, b: np.ndarray, spec: Activation) -> str | None:
    if a.shape != b.shape:
        return f"shape ours {a.shape} vs ref {b.shape}"
    if a.ndim != (1 if spec.layout == "N" else 2):
        return f"not {SHAPE_NAMES[spec.layout]}: {a.shape}"
    if spec.kind == "routing" and a.shape[1] % 2:
        return f"not a router's [tokens, 2k]: {a.shape}"
    return None


def _count_ids(row: Row, a: np.ndarray, b: np.ndarray, spec: Activation) -> list[str]:
    """Fill equal / total / first_unequal of ids arrays (any layout); the violation text, if any."""
    same = a == b  # exact, across dtypes: an int id against a float32-stored one; NaN is never equal
    row.equal, row.total = int(same.sum()), int(same.size)
    if row.equal == row.total:
        return []
    t = spec.time_axis if spec.kind != "routing" else 0
    per_step = (~same).any(axis=tuple(i for i in range(same.ndim) if i != t)) if t is not None else ~same
    row.first_unequal = int(np.argmax(per_step))
    what = "expert ids" if spec.kind == "routing" else "ids"
    return [f"{row.total - row.equal} of {row.total} {what} differ"]


def _compare_floats(row: Row, a: np.ndarray, b: np.ndarray, spec: Activation, bounds: Bounds,
                    rate: int) -> list[str]:
    """Fill the float metrics (whole tensor, per token or time step, the dB figures of a waveform); the
    violations, of the waveform bounds for a waveform and of the float bounds otherwise."""
    whole = metrics(a, b)
    row.mse, row.cosine, row.nmse, row.max_abs = (whole[k] for k in METRICS)
    if spec.layout != "N":
        row.per_token = per_token_metrics(a.T, b.T) if spec.layout == "CT" else per_token_metrics(a, b)
    if spec.kind == "waveform":
        row.snr_db, row.si_sdr_db, row.mel_distance_db = snr_db(a, b), si_sdr_db(a, b), mel_distance_db(a, b, rate)
        return bounds.waveform.violations(
            {"snr_db": row.snr_db, "si_sdr_db": row.si_sdr_db, "mel_distance_db": row.mel_distance_db})
    return bounds.violations(whole)


def _compare_pair(name: str, a: np.ndarray, b: np.ndarray, spec: Activation, bounds: Bounds, rate: int) -> Row:
    row = Row(name, "compared", shape_ours=a.shape, shape_ref=b.shape, kind=spec.kind, layout=spec.layout)
    problem = _shape_problem(a, b, spec)
    if problem:
        row.status = "shape_mismatch"
        row.within_bounds = False
        row.violations = [problem]
        return row
    row.nonfinite_ours = int(a.size - np.isfinite(a).sum())
    if spec.kind == "ids":
        violations = _count_ids(row, a, b, spec)
    elif spec.kind == "routing":
        (ids_a, w_a), (ids_b, w_b) = routing_parts(a), routing_parts(b)
        violations = _count_ids(row, ids_a, ids_b, spec) + _compare_floats(row, w_a, w_b, spec, bounds, rate)
    else:
        violations = _compare_floats(row, a, b, spec, bounds, rate)
    if row.nonfinite_ours:
        violations.insert(0, f"{row.nonfinite_ours} non-finite values in ours")
    row.violations = violations
    row.within_bounds = not violations
    return row


def compare_sets(ours, ref, bounds: Bounds | None = None, *, specs=None,
                 overrides: Mapping[str, Bounds] | None = None, manifest: dict | None = None,
                 sample_rate: int = SAMPLE_RATE) -> Comparison:
    """Compare two activation sets by name.

    `ours` and `ref` are name -> array mappings (or store.Reference objects, whose manifest then goes into the
    report). `specs` types the arrays ({name: Activation} or a list of them); without it, the types stored in
    the reference's manifest ("activations") are used, and a name with no type is "float" [tokens, features].
    `overrides` maps glob patterns (`"*.mlp.router"`) to their own Bounds. `sample_rate` is the waveforms' (the
    mel distance's filterbank is in Hz); the Comparison carries it on to the report.
    """
    overrides = dict(overrides or {})
    ours, _ = _as_set_and_manifest(ours)
    ref, ref_manifest = _as_set_and_manifest(ref)
    manifest = dict(manifest if manifest is not None else ref_manifest)
    bounds_basis = "given" if bounds is not None else str(manifest.get("dtype") if manifest.get("dtype") in DTYPE_BOUNDS
                                                           else "float32")
    bounds = bounds if bounds is not None else default_bounds(bounds_basis)
    if specs is None:
        stored = ref_manifest.get("activations") or manifest.get("activations") or {}
        specs = {n: Activation.from_json(n, d) for n, d in stored.items()}
    specs = as_specs(specs)

    rows: list[Row] = []
    for name in list(ref) + [n for n in ours if n not in ref]:
        spec = specs.get(name) or Activation(name, ())
        typed = {"kind": spec.kind, "layout": spec.layout}
        if name not in ours:
            rows.append(Row(name, "missing_in_ours", shape_ref=tuple(np.shape(ref[name])), **typed))
        elif name not in ref:
            rows.append(Row(name, "missing_in_ref", shape_ours=tuple(np.shape(ours[name])), **typed))
        else:
            rows.append(_compare_pair(name, np.asarray(ours[name]), np.asarray(ref[name]), spec,
                                      bounds_for(name, bounds, overrides), sample_rate))

    first = None
    for i, row in enumerate(rows):
        if row.within_bounds is False:
            input_name = rows[i - 1].name if i > 0 else None
            input_row = rows[i - 1] if i > 0 else None
            first = FirstDivergence(
                name=row.name, index=i, row=row, input_name=input_name, input_row=input_row,
                ours=ours.get(row.name), ref=ref.get(row.name),
                ours_input=ours.get(input_name) if input_name else None,
                ref_input=ref.get(input_name) if input_name else None)
            break
    return Comparison(rows=rows, bounds=bounds, overrides=overrides, manifest=manifest, first_divergence=first,
                      ours=ours, ref=ref, sample_rate=sample_rate, bounds_basis=bounds_basis)
