"""The project's one error hierarchy: everything omni_lab refuses is an `OmniLabError`.

The command line prints an OmniLabError as one line and exits with status 2; anything else reaching it is a
bug in omni_lab and is reported as one (a traceback only with `--debug`). Third-party errors (safetensors,
gguf, numpy, zipfile, json, tokenizers) are caught where they are raised and re-raised as one of these,
naming the file and, where there is one, the field or tensor.

Input errors also derive from ValueError, which is what they are, and what callers caught before this
hierarchy existed.
"""

from __future__ import annotations

from pathlib import Path


class OmniLabError(Exception):
    """Base of every error omni_lab raises on purpose."""


class InputError(OmniLabError, ValueError):
    """A file or value given to omni_lab that it cannot use. `path` is the file, `field` the field, tensor or
    member inside it; given, the message is prefixed with them, so one line says where to look. (Without
    them the message must name the file itself: most messages were written that way.)"""

    def __init__(self, message: str, *, path: str | Path | None = None, field: str | None = None):
        self.path = None if path is None else Path(path)
        self.field = field
        where = ": ".join(str(p) for p in (path, field) if p is not None)
        super().__init__(f"{where}: {message}" if where else message)


class CheckpointError(InputError):
    """A checkpoint (safetensors directory or GGUF file) that cannot be read as asked."""


class GGUFError(CheckpointError):
    """A GGUF file that cannot be read or written as asked."""


class ConfigError(InputError):
    """A config.json we cannot run: not JSON, or a field of the wrong type or out of range."""


class ReferenceFileError(InputError):
    """A stored reference (activations.npz + manifest.json) that is corrupt or malformed."""


class OmniLabWarning(UserWarning):
    """Base of the warnings omni_lab gives: it ran, but what it computed is suspect. The command line prints
    one as one line."""


class NonFiniteWarning(OmniLabWarning):
    """A model's weights, or its logits, hold NaN or inf. The weights are checked by the GPU as they are
    uploaded (ops/finite.py: one pass over their bytes, where a host check of a 30B model costs ~25 s of
    CPU), and the warning names them; the logits (or, in greedy decoding, the top value the argmax reads
    beside the id) are checked as they are read, which also catches inputs that go non-finite. A NaN on the
    attention scores' path may never reach our logits (our attention kernel absorbs it: WGSL lets an
    implementation assume no NaN or inf) where Transformers' go NaN: the load-time check is what names it."""


def warn_non_finite(source: str | Path | None, what: str) -> None:
    """One NonFiniteWarning naming the model, saying what went non-finite and how to find where."""
    import warnings

    model = source if source is not None else "the model"
    warnings.warn(NonFiniteWarning(
        f"{model}: {what} hold NaN or inf: the weights or the inputs produce non-finite values; `omni-lab compare "
        f"--model {model} ...` shows the first activation that goes non-finite"), stacklevel=3)
