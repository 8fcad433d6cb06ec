"""The op registry: every kernel's cases against its numpy reference, in the spirit of llama.cpp's
test-backend-ops. tests/test_ops.py runs all the cases, `omni-lab selfcheck` the quick ones, and
bench/kernels.py takes its numpy references from here.

A case is a parameter record (`Case`): an op of a family module, the params of one point of that op's
sweep, an NMSE bound, and a function `fn(rng, **params) -> (ours, reference)` that runs the op into
sentinel-padded outputs (`padded_output`) and returns what it computed next to its numpy reference (arrays,
or tuples of arrays held to the same bound, e.g. the q and k of one dispatch). `check` runs a case, checks
the sentinels around every padded output it made, and records which kernels it dispatched
(Runtime.recording), so that coverage of shaders/ is measured, not declared.

A family is a module of omni_lab/ops/ with `cases() -> list[Case]`, built with `sweep` from its sweep
lists; adding one is adding its name to FAMILIES. An op's numpy reference is `<op>_ref` in its module
(`reference`). Checks beyond the NMSE (exact indices, bit patterns, row sums) go through `require`.
"""

from __future__ import annotations

import importlib
import math
import re
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..gpu import Tensor, runtime
from ..gpu.runtime import SHADER_DIR, SUBGROUP_SUFFIX, shader_source

FAMILIES = ("attention", "conv", "copy", "elementwise", "embedding", "finite", "linear", "logits", "moe", "norm", "q8_0", "rope", "select",
            "snake", "softmax", "tiles", "transpose")

# Per-op NMSE bounds (sum((a-b)^2) / sum(b^2)) start from these two (DESIGN.md, Kernels); each family
# tightens them where its math allows and says why.
NMSE_ELEMENTWISE = 1e-7
NMSE_MATMUL = 5e-4

SENTINEL = np.float32(-7.25e30)
PAD = 64  # elements of sentinel on each side of an output


class CaseFailure(AssertionError):
    """A check of a case other than its NMSE failed: a sentinel overwritten, or a `require`."""


def require(cond: bool, message: str) -> None:
    """Inside a case: a check that is not an NMSE (exact indices, bit patterns, row sums)."""
    if not cond:
        raise CaseFailure(message)


def nmse(a, b) -> float:
    """sum((a - b)^2) / sum(b^2) in float64 (over sum((a - b)^2) alone where b is all zeros); inf where `a`
    has a NaN or inf, so that no bound passes it."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape {a.shape} != reference {b.shape}")
    if not np.isfinite(a).all():
        return math.inf
    denom = float(np.sum(b * b))
    return float(np.sum((a - b) ** 2)) / (denom if denom > 0 else 1.0)


def rand(rng: np.random.Generator, *shape, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# -- sentinel padding ------------------------------------------------------------------------------

_outputs: list[Tensor] | None = None  # the padded outputs made by the case `check` is running


def padded_output(shape, dtype: str = "f32") -> Tensor:
    """An output tensor inside a buffer whose PAD elements before and after hold a sentinel (and so does
    the tensor itself, until written). Inside `check`, the sentinels are checked after the case."""
    rt = runtime()
    n = int(np.prod(shape))
    align = rt.gpu.offset_alignment
    lead = max(PAD * 4, align) // align * align  # bytes before the output, aligned for binding
    host = np.full(lead // 4 + n + PAD, SENTINEL, dtype=np.float32)
    if dtype in ("i32", "u32"):
        host = host.view(np.int32 if dtype == "i32" else np.uint32)
    out = rt.upload(host).view(tuple(shape), dtype, offset=lead)
    if _outputs is not None:
        _outputs.append(out)
    return out


def sentinel_damage(out: Tensor) -> str | None:
    """What a kernel wrote around `out` (None: nothing). Reads the whole padded buffer."""
    words = Tensor(out.buffer, (out.buffer.size // 4,), "u32").numpy()
    lead = out.offset // 4
    n = out.nbytes // 4
    sentinel = np.array([SENTINEL], dtype=np.float32).view(np.uint32)[0]
    before, after = words[:lead], words[lead + n: lead + n + PAD]
    damage = [f"{int((side != sentinel).sum())} words {where} its output"
              for side, where in ((before, "before"), (after, "after")) if (side != sentinel).any()]
    return f"kernel wrote {' and '.join(damage)} {out.shape} {out.dtype}" if damage else None


def check_sentinels(out: Tensor) -> None:
    """Assert nothing was written around `out`."""
    damage = sentinel_damage(out)
    if damage:
        raise CaseFailure(damage)


# -- cases -----------------------------------------------------------------------------------------

def _fmt(v) -> str:
    if isinstance(v, (tuple, list)):
        return "x".join(map(str, v))
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclass(frozen=True, eq=False)
class Case:
    family: str  # module of omni_lab/ops/: "norm"
    op: str  # the op of that module: "rmsnorm"
    params: dict  # one point of the op's sweep, as fn's keyword arguments: {"rows": 5, "d": 203}
    bound: float  # NMSE of ours against the reference must be <= this
    fn: Callable  # fn(rng, **params) -> (ours, reference): arrays, or tuples of arrays
    quick: bool = False  # one of the cases `omni-lab selfcheck` runs
    large: bool = False  # tensors past the 128 MiB binding limit: never quick

    @property
    def name(self) -> str:
        return f"{self.family}.{self.op}"

    @property
    def id(self) -> str:
        return "-".join([self.name] + [f"{k}={_fmt(v)}" for k, v in self.params.items()])

    def run(self, rng: np.random.Generator):
        return self.fn(rng, **self.params)


def sweep(family: str, op: str, bound: float, fn: Callable, grid: list[dict], quick: list[dict] = (),
          large: bool = False) -> list[Case]:
    """One Case per params dict of `grid`; those equal to an entry of `quick` are selfcheck's."""
    missing = [q for q in quick if q not in grid]
    if missing:
        raise ValueError(f"{family}.{op}: quick cases {missing} are not points of the sweep")
    if large and quick:
        raise ValueError(f"{family}.{op}: a large case cannot be quick")
    return [Case(family, op, dict(p), bound, fn, quick=p in quick, large=large) for p in grid]


def all_cases(families=FAMILIES) -> list[Case]:
    return [case for name in families for case in importlib.import_module(f"{__package__}.{name}").cases()]


def quick_cases(families=FAMILIES) -> list[Case]:
    return [case for case in all_cases(families) if case.quick]


def reference(name: str) -> Callable:
    """The numpy reference of op "<family>.<op>": `<op>_ref` in omni_lab/ops/<family>.py."""
    family, op = name.split(".")
    ref = getattr(importlib.import_module(f"{__package__}.{family}"), f"{op}_ref", None)
    if ref is None:
        raise KeyError(f"no numpy reference {op}_ref in omni_lab/ops/{family}.py")
    return ref


@dataclass
class CheckResult:
    op: str  # the case's id
    nmse: float
    bound: float
    seconds: float
    kernels: frozenset = frozenset()  # "<shader>.<entry>" of every kernel the case dispatched
    error: str | None = None  # a failed `require` or sentinel
    case: Case | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None and bool(np.isfinite(self.nmse)) and self.nmse <= self.bound


def _worst(ours, ref) -> float:
    pairs = list(zip(ours, ref, strict=True)) if isinstance(ours, tuple) else [(ours, ref)]
    return max(nmse(a, b) for a, b in pairs)


def check(case: Case, rng: np.random.Generator) -> CheckResult:
    """Run one case: its worst NMSE over its outputs, the kernels it dispatched, and what failed besides
    (a `require`, a sentinel, or no padded output at all). Errors of the op itself propagate."""
    global _outputs
    rt = runtime()
    outer, _outputs = _outputs, []
    t0 = time.perf_counter()
    error = None
    try:
        with rt.recording() as kernels:
            try:
                value = _worst(*case.run(rng))
            except CaseFailure as e:
                value, error = math.nan, str(e)
        outputs = _outputs
    finally:
        _outputs = outer
    damage = [d for d in map(sentinel_damage, outputs) if d]
    if not outputs:
        damage.append("the case wrote into no sentinel-padded output")
    error = "; ".join(([error] if error else []) + damage) or None
    return CheckResult(case.id, value, case.bound, time.perf_counter() - t0, frozenset(kernels), error, case)


# -- entry points ----------------------------------------------------------------------------------

_ENTRY = re.compile(r"@compute(?:\s*@\w+(?:\([^)]*\))?)*\s*fn\s+(\w+)")
_COMMENT = re.compile(r"//[^\n]*")


def entry_points(subgroups: bool | None = None) -> list[str]:
    """Every compute entry point of shaders/*.wgsl as its kernels are named ("<shader>.<entry>"), with the
    shader's includes expanded: lib/tiles.wgsl's `main` is tiles.main and tiles_q8.main. The subgroup
    variants (shaders/*_sg.wgsl) only where `subgroups` (default: the open adapter has the feature), since
    nothing can build them elsewhere."""
    if subgroups is None:
        subgroups = runtime().gpu.has_subgroups
    return [f"{path.stem}.{entry}" for path in sorted(SHADER_DIR.glob("*.wgsl"))
            if subgroups or not path.stem.endswith(SUBGROUP_SUFFIX)
            for entry in _ENTRY.findall(_COMMENT.sub("", shader_source(path)))]
