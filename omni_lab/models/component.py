"""The base every part of Qwen3-Omni sits on: one component, one forward as one GPU step.

A component (dense Qwen3, the thinker's text model; next the audio and vision encoders, the talker, the
code predictor, code2wav) declares
- `activations(t)`: its named, typed activations for an input of length t, in execution order
  (omni_lab/activations.py), named by the HF module paths its forward hooks see;
- `scratch_shapes(t, rows)`, where it uses `self.scratch(t, rows)`: the buffers one step of length t needs,
  by name -> (shape, dtype), allocated once per length and reused;
- a method that records one forward into the open step (a decoder's and code2wav's `_encode`), each layer
  writing a tapped activation straight into the tap's buffer (`ctx.out(name, default)`).

The base then gives `forward` (input as token ids or as embeddings another component made), typed
taps read back once at the end of the step, GPU-resident exports (an activation copied, inside the
recorded step, into a persistent [max_len, F] buffer another component reads on the GPU), and recorded
steps replayed under an explicit plan key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from ..activations import Activation
from ..errors import InputError
from ..gpu import Tensor, runtime
from ..ops import copy


class ModelInputError(InputError):
    """Input a model cannot take (token id outside the vocabulary, sequence past the cache)."""


@dataclass
class StepContext:
    """What the layers of one recorded forward read: its length, its scratch, the per-step buffer, the
    tap buffers (name -> Tensor, or a tuple for a routing activation), and the layer hooks."""

    t: int
    s: SimpleNamespace
    step_buf: Tensor
    taps: dict = field(default_factory=dict)

    def out(self, name: str, default: Tensor) -> Tensor:
        """Where the activation `name` goes: its tap buffer when tapped, else `default` (scratch)."""
        return self.taps.get(name, default)


class Buffers:
    """Scratch tensors of one forward whose shapes vary inside it, by (shape, slot): a stage reuses a slot's
    buffer once its value is consumed, and two values alive at once take different slots. A tapped
    activation goes to its tap buffer instead (StepContext.out), so a slot is never a value the caller
    reads back. `prefix` labels the buffers (the component's module path)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self._bufs: dict[tuple, Tensor] = {}

    def get(self, shape: tuple[int, ...], slot: str, dtype: str = "f32") -> Tensor:
        key = (tuple(shape), slot, dtype)
        if key not in self._bufs:
            self._bufs[key] = runtime().empty(shape, dtype, label=f"{self.prefix}.{slot}")
        return self._bufs[key]


class Component:
    cfg: object
    max_len: int
    step_buf: Tensor  # u32 [4]: the first position of the current step, written once per step

    def _init_component(self, ckpt) -> None:
        """After the weights: the GPU's NaN / inf check of every weight uploaded from ckpt is read (one
        readback: a warning names the weights that hold one), and the per-step state is made."""
        from ..ops.finite import weight_check

        weight_check(ckpt).report()
        self.step_buf = runtime().empty((4,), "u32", label="step")
        self._scratch: dict[tuple, SimpleNamespace] = {}
        self._plans: dict[tuple, list] = {}   # recorded steps, replayed under their plan key
        self.exports: dict[str, Tensor] = {}  # activation name -> persistent [max_len, F] buffer
        self.length = 0  # positions filled (KV cache rows of a decoder)

    @classmethod
    def load(cls, path, max_len: int = 2048, progress: bool = True):
        """This component of the checkpoint directory or .gguf file at `path`."""
        from .registry import open_checkpoint

        ckpt = open_checkpoint(path)
        return cls(cls.config_from(ckpt.config, source=str(path)), ckpt, max_len, progress)

    # -- provided by each component ------------------------------------------------------------
    @classmethod
    def config_from(cls, d: dict, source: str):
        """The component's config from a whole config.json dict."""
        raise NotImplementedError

    def activations(self, t: int) -> list[Activation]:
        raise NotImplementedError

    @classmethod
    def input_specs(cls, cfg, x) -> list[Activation]:
        """The activations of one forward over the input x (ids [T], codes [Q, T]: its last axis is t)."""
        return cls.activation_specs(cfg, np.shape(x)[-1])

    def scratch_shapes(self, t: int, rows: int) -> dict[str, tuple[tuple[int, ...], str]]:
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------
    def activation_shapes(self, t: int) -> dict[str, tuple[int, ...]]:
        return {a.name: a.shape for a in self.activations(t)}

    def scratch(self, t: int, rows: int) -> SimpleNamespace:
        key = (t, rows)
        if key not in self._scratch:
            rt = runtime()
            self._scratch[key] = SimpleNamespace(**{
                name: rt.empty(shape, dtype, label=name) for name, (shape, dtype) in self.scratch_shapes(t, rows).items()})
        return self._scratch[key]

    def tap_buffers(self, a: Activation):
        """The GPU buffer(s) a tapped activation is written to: a routing activation is the router's
        ([T, k] weights, [T, k] expert ids), which the router kernel writes as two tensors."""
        rt = runtime()
        if a.kind == "routing":
            k = a.shape[1] // 2
            return (rt.empty((a.shape[0], k), label=a.name + ".weights"),
                    rt.empty((a.shape[0], k), "i32", label=a.name + ".experts"))
        return rt.empty(a.shape, label=a.name)

    @staticmethod
    def collect(a: Activation, values) -> np.ndarray:
        """The host array of a tapped activation from what its buffers read back."""
        if a.kind == "routing":  # [T, k] weights and ids -> [T, 2k], ids first
            weights, experts = values
            return np.concatenate([experts.astype(np.float32), weights], axis=1)
        return values.reshape(a.shape)

    def export(self, name: str) -> Tensor:
        """A persistent [max_len, F] buffer that every later step fills, inside the recorded step, with
        the rows of activation `name` at the step's positions (start .. start + T - 1): another component
        reads it on the GPU, nothing goes through the host. Recorded plans are dropped so that the next
        steps record the copy."""
        spec = {a.name: a for a in self.activations(1)}.get(name)
        if spec is None or spec.layout != "TF" or spec.kind != "float":
            raise ModelInputError(f"{name!r} is not a [T, F] float activation of this component; exports are")
        if name not in self.exports:
            self.exports[name] = runtime().empty((self.max_len, spec.shape[1]), label=f"export:{name}")
            self._plans.clear()
        return self.exports[name]

    def _export_rows(self, ctx: StepContext, name: str, value: Tensor) -> None:
        """The one place exports are written: called by a component right after it computes `name`."""
        buf = self.exports.get(name)
        if buf is not None:
            copy.rows_at_step(value, buf, ctx.step_buf)

    def _exported_taps(self, t: int) -> dict[str, Tensor]:
        """Exports need their activation in a buffer of its own (scratch buffers are overwritten later in
        the step): an exported activation is tapped into a per-length buffer."""
        if not self.exports:  # every forward asks: no activation list built for nothing
            return {}
        shapes = self.activation_shapes(t)
        return {n: self.scratch_export(n, shapes[n]) for n in self.exports}

    def scratch_export(self, name: str, shape) -> Tensor:
        key = ("export", name, tuple(shape))
        if key not in self._scratch:
            self._scratch[key] = runtime().empty(shape, label=name)
        return self._scratch[key]

    def plan(self, key: tuple, record, reads: tuple[Tensor, ...], flush: bool = False) -> list[np.ndarray]:
        """Run a step recorded once under `key` and replayed after: `record()` encodes it. The key says
        everything the step's dispatches depend on besides GPU-resident values (positions, lengths live
        in buffers), so a different step (another length, another head) never replays under it. `flush`:
        the recording submits as it goes (Runtime.step; the step writes no buffer once it dispatches)."""
        rt = runtime()
        plan = self._plans.get(key)
        if plan is not None:
            return rt.replay(plan, reads)
        with rt.step(flush=flush) as step:
            record()
            dispatches = list(step.dispatches)
            values = [step.read(r) for r in reads]
        self._plans[key] = dispatches
        return [v.value for v in values]

    def check_taps(self, t: int, names) -> dict[str, Activation]:
        specs = {a.name: a for a in self.activations(t)}
        unknown = [n for n in names if n not in specs]
        if unknown:
            raise ModelInputError(f"no activation named {unknown[0]!r}; names are like {list(specs)[:3]}")
        return specs

    def read_taps(self, step, tapped: dict) -> dict:
        reads = {}
        for n, v in tapped.items():
            reads[n] = tuple(step.read(b) for b in v) if isinstance(v, tuple) else step.read(v)
        return reads

    def collect_reads(self, specs: dict[str, Activation], reads: dict) -> dict[str, np.ndarray]:
        out = {}
        for n, rb in reads.items():
            value = tuple(r.value for r in rb) if isinstance(rb, tuple) else rb.value
            out[n] = self.collect(specs[n], value) if n in specs else value
        return out


def embeddings_input(embeds: Tensor, t: int, width: int, out: Tensor) -> Tensor:
    """Embeddings another component made on the GPU ([T, width] f32) as the input of a forward: copied
    into `out` inside the step, so nothing leaves the GPU."""
    if embeds.shape != (t, width) or embeds.dtype != "f32":
        raise ModelInputError(f"embeddings must be [{t}, {width}] f32, got {embeds.shape} {embeds.dtype}")
    return copy.copy(embeds, out)


def gather_rows(ids_a: Tensor, table_a, ids_b: Tensor, table_b, out: Tensor, scratch: Tensor) -> Tensor:
    """out[t] = table_a[ids_a[t]] + table_b[ids_b[t]] inside the open step, where an id outside its table
    gives a zero row: rows taken from one of two tables (a prompt of text and audio rows, the talker's text
    rows and tts specials) or the sum of a row of each (a text row over a codec embedding), exactly.
    `scratch` is [T, D] f32 for the second gather."""
    from ..ops import elementwise, embedding

    embedding.embedding(ids_a, table_a, out=out)
    embedding.embedding(ids_b, table_b, out=scratch)
    return elementwise.add(out, scratch, out=out)
