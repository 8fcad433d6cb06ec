"""Seeded mutation fuzzing of every loader, shared by the suite's fuzz test (tests/test_fuzz.py, a few hundred
cases) and bench/fuzz.py (thousands, with a JSON summary).

A case copies a good artifact of the tiny checkpoint (its safetensors directory, its config.json, its GGUF, a
stored reference) or a WAV clip, applies one seeded mutation, and hands the result to the entry points the
command line takes with it: `load` (what generate, extract and compare do: config parsed, every weight checked
and uploaded, then two greedy tokens), `quantize`, `reference` (compare --reference), `audio` (--audio's
reader) and `image` (--image's reader, on a PNG). Each entry point ends in one outcome:

- accepted: it ran (a mutation of weight bytes, or of a field nothing reads, may be harmless);
- warned: it ran and said its logits came out NaN or inf (a mutated weight: NonFiniteWarning), which is how
  NaN weights are handled (they are not bit-checked at load);
- missed: it ran on a file that is corrupt whatever the seed (MUST_REFUSE: a cut audio file);
- refused: an OmniLabError whose message names the case's file;
- unnamed: an OmniLabError that does not name the file;
- raw: any other exception (a traceback the user would see);
- hang: it ran past the time limit; oom: it ran past the memory limit (MemoryError).

Only accepted, warned and refused are good. Limits: SIGALRM for time, RLIMIT_DATA (the soft limit, put back after the
case) for memory, so a hang or a 2 TiB allocation is a counted outcome, not a stuck or killed run.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import signal
import struct
import traceback
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import NonFiniteWarning, OmniLabError

FORMATS = ("safetensors", "config", "gguf", "reference", "audio", "image")
# Values a mutated field takes: types JSON can carry, extremes and off-by-ones
POOL = (0, -1, 1, 2, 3, 7, 2 ** 31, 2 ** 32, 2 ** 40, 2 ** 63 - 1, 10 ** 12, -10 ** 12, "2", "", None, True, False,
        1.5, -0.0, math.nan, math.inf, -math.inf, [], {}, [1, 2], [0, 2 ** 40], "x" * 300, "F32", "I64", "BOOL")
GOOD = ("accepted", "refused", "warned")
AUDIO_CONTAINERS = ("wav", "flac", "ogg")
# Mutations whose result is corrupt whatever the seed: accepting one is a miss, not a harmless edit
MUST_REFUSE = {"audio.truncate", "audio.flac.truncate", "audio.ogg.truncate"}


@dataclass
class Outcome:
    case: str
    format: str
    mutation: str
    entry: str
    outcome: str
    detail: str = ""


class _Timeout(BaseException):
    """Raised by SIGALRM inside a case; a BaseException so the code under test cannot catch it as an error."""


@contextlib.contextmanager
def limits(seconds: float, memory_bytes: int):
    """Run the block under a time limit (SIGALRM) and a memory limit (soft RLIMIT_DATA, current use plus
    `memory_bytes`), both put back after."""
    import resource

    def alarm(signum, frame):
        raise _Timeout

    old_handler = signal.signal(signal.SIGALRM, alarm)
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    used = _data_bytes()
    resource.setrlimit(resource.RLIMIT_DATA, (min(used + memory_bytes, hard if hard >= 0 else used + memory_bytes), hard))
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def _data_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    return 0


# ---- the good artifacts ---------------------------------------------------------------------------------
def build_base(root: Path) -> dict[str, Path]:
    """The tiny qwen3 checkpoint, its GGUF and a stored reference of it, under root (built once)."""
    from .formats.quantize import quantize_checkpoint
    from .models.tiny import build_tiny_qwen3
    from .reference import save_reference

    root.mkdir(parents=True, exist_ok=True)
    ckpt = root / "ckpt"
    if not ckpt.exists():
        build_tiny_qwen3(ckpt, seed=0)
    gguf = root / "tiny.gguf"
    if not gguf.exists():
        quantize_checkpoint(ckpt, gguf, progress=False)
    ref = root / "refs" / "r"
    if not ref.exists():
        rng = np.random.default_rng(0)
        save_reference("r", {"model.layers.0": rng.standard_normal((3, 8)), "lm_head": rng.standard_normal((3, 5))},
                       model_path=ckpt, inputs={"input_ids": [1, 2, 3]}, dtype="float32", root=root / "refs")
    clips = {}
    for ext in AUDIO_CONTAINERS:
        clips[ext] = root / f"clip.{ext}"
        if not clips[ext].exists():
            import soundfile as sf

            wave = (0.1 * np.random.default_rng(0).standard_normal(3200)).astype(np.float32)
            sf.write(clips[ext], wave, 16000, **({"subtype": "FLOAT"} if ext == "wav" else {}))
    png = root / "photo.png"
    if not png.exists():
        from PIL import Image

        pixels = np.random.default_rng(0).integers(0, 256, (23, 37, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(png)
    return {"ckpt": ckpt, "gguf": gguf, "ref": ref, "png": png, **clips}


# ---- mutations: each edits the copy in `case` and returns its name ----------------------------------------
def _st_split(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _st_join(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def _flip(raw: bytearray, lo: int, hi: int, r: random.Random, n: int = 3) -> str:
    """Set 1 to n random bytes in [lo, hi) to random values; returns where, for the record."""
    done = []
    for _ in range(r.randint(1, n)):
        if hi > lo:
            i = r.randrange(lo, hi)
            raw[i] = r.randrange(256)
            done.append(i)
    return f"bytes {done}"


def mutate_safetensors(ckpt: Path, r: random.Random) -> str:
    st = ckpt / "model.safetensors"
    header, data = _st_split(st)
    names = [k for k in header if k != "__metadata__"]
    kind = r.choice(("field", "field", "header-bytes", "length", "truncate", "append", "data-bytes",
                     "stray-shard", "index", "rename", "non-finite"))
    raw = bytearray(st.read_bytes())
    n = struct.unpack("<Q", raw[:8])[0]
    if kind == "field":
        t = header[r.choice(names)]
        key = r.choice(("dtype", "shape", "data_offsets", "missing"))
        if key == "missing":
            del t[r.choice(("dtype", "shape", "data_offsets"))]
        elif key == "shape" and r.random() < 0.5:
            t["shape"] = [r.choice((0, 1, 2 ** 20, 2 ** 40, -1)) for _ in t["shape"]]
        elif key == "data_offsets" and r.random() < 0.5:
            t["data_offsets"] = [o + r.choice((-8, -2, 2, 4, 2 ** 40)) for o in t["data_offsets"]]
        else:
            t[key] = r.choice(POOL)
        st.write_bytes(_st_join(header, data))
    elif kind == "header-bytes":
        _flip(raw, 8, 8 + n, r)
        st.write_bytes(raw)
    elif kind == "length":
        raw[:8] = struct.pack("<Q", r.choice((0, 1, n - 1, n + 1, 2 ** 32, 2 ** 40, 2 ** 64 - 1)))
        st.write_bytes(raw)
    elif kind == "truncate":
        st.write_bytes(raw[:r.randrange(len(raw))])
    elif kind == "append":
        st.write_bytes(raw + bytes(r.randrange(256) for _ in range(r.randint(1, 64))))
    elif kind == "data-bytes":  # values change, the structure does not: accepting it is right
        _flip(raw, 8 + n, len(raw), r, 8)
        st.write_bytes(raw)
    elif kind == "non-finite":  # one weight NaN or inf: warned where it reaches the logits, else harmless
        name = r.choice([k for k in names if header[k]["dtype"] == "BF16"])
        lo, hi = header[name]["data_offsets"]
        at = 8 + n + lo + 2 * r.randrange((hi - lo) // 2)
        raw[at:at + 2] = r.choice((b"\xc0\x7f", b"\x80\x7f", b"\x80\xff"))  # bf16 NaN, +inf, -inf
        st.write_bytes(raw)
        kind += f": {name}"
    elif kind == "stray-shard":
        shutil.copy(st, ckpt / "model-00002-of-00002.safetensors")
    elif kind == "index":
        weight_map = {k: "model.safetensors" for k in names}
        victim = r.choice(names)
        weight_map[victim] = r.choice(("../model.safetensors", "/etc/passwd", "absent.safetensors", 7, None))
        body = r.choice(({"weight_map": weight_map}, {"weight_map": []}, [], {"metadata": {}}))
        (ckpt / "model.safetensors.index.json").write_text(json.dumps(body))
    elif kind == "rename":  # a tensor the model needs is missing (renamed)
        old = r.choice(names)
        header[old + ".renamed"] = header.pop(old)
        st.write_bytes(_st_join(header, data))
    return f"safetensors.{kind}"


def mutate_config(ckpt: Path, r: random.Random) -> str:
    path = ckpt / "config.json"
    cfg = json.loads(path.read_text())
    kind = r.choice(("field", "field", "field", "delete", "text", "nested", "not-object"))
    if kind == "field":
        key = r.choice([k for k, v in cfg.items() if not isinstance(v, dict)] + ["rope_parameters", "layer_types"])
        cfg[key] = r.choice(POOL) if key != "layer_types" else ["full_attention"] * r.randint(0, 4)
        path.write_text(json.dumps(cfg))
    elif kind == "delete":
        del cfg[r.choice(list(cfg))]
        path.write_text(json.dumps(cfg))
    elif kind == "text":
        raw = bytearray(path.read_bytes())
        _flip(raw, 0, len(raw), r)
        path.write_bytes(raw[:r.randrange(1, len(raw) + 1)])
    elif kind == "nested":
        path.write_text("[" * 100000 + "]" * 100000)
    else:
        path.write_text(json.dumps(r.choice((None, [], 3, "config"))))
    return f"config.{kind}"


def _poke(part: np.ndarray, i: int, value: int) -> int:
    """Set element i of a memory-mapped field part to `value`'s low bytes, whatever the part's dtype (signed,
    float or bool parts are written as their unsigned bit pattern); returns what was written."""
    value %= 1 << (8 * part.itemsize)
    part.view(f"u{part.itemsize}")[i] = value
    return value


def mutate_gguf(path: Path, r: random.Random) -> str:
    from gguf import GGUFReader

    kind = r.choice(("kv", "tensor-info", "tensor-info", "counts", "header-bytes", "truncate", "string", "data-bytes"))
    if kind in ("header-bytes", "truncate", "data-bytes"):
        start = GGUFReader(path, "r").data_offset
        raw = bytearray(path.read_bytes())
        if kind == "truncate":
            path.write_bytes(raw[:r.randrange(len(raw))])
        else:
            note = _flip(raw, *((0, start) if kind == "header-bytes" else (start, len(raw))), r, 8)
            path.write_bytes(raw)
            return f"gguf.{kind}: {note}"
        return f"gguf.{kind}"
    reader = GGUFReader(path, "r+")
    if kind == "kv":
        field = r.choice([f for f in reader.fields.values() if not f.name.startswith("GGUF.")])
        part = r.choice(field.parts[2:])  # after the key's own length and bytes: the type, counts, values
        _poke(part, r.randrange(len(part)), r.choice((0, 1, 3, 7, 9, 13, 255, 2 ** 31, 2 ** 32 - 1)))
    elif kind == "tensor-info":
        t = r.choice(reader.tensors)
        idx = r.choice((2, 3, 4, 5))  # n_dims, dims, type, offset
        part = t.field.parts[idx]
        big = {2: (0, 5, 9), 3: (0, 3, 2 ** 31, 2 ** 40), 4: (0, 1, 2, 8, 30, 31, 99), 5: (1, 32, 2 ** 40)}[idx]
        value = _poke(part, r.randrange(len(part)), r.choice(big))
        kind += f": {t.name} {('n_dims', 'dims', 'type', 'offset')[idx - 2]} = {value}"
    elif kind == "counts":
        part = reader.fields[r.choice(("GGUF.tensor_count", "GGUF.kv_count"))].parts[0]
        _poke(part, 0, max(0, int(part[0]) + r.choice((-1, 1, 2 ** 32, 2 ** 60))))
    elif kind == "string":
        key = r.choice(("omni_lab.hf_config", "omni_lab.tokenizer_json", "general.architecture"))
        data = reader.fields[key].parts[4]
        data[r.randrange(len(data))] = r.choice((0xFF, 0xC3, ord("["), ord("}"), 0))
    reader.data.flush()
    del reader
    return f"gguf.{kind}"


def mutate_reference(ref: Path, r: random.Random) -> str:
    npz, manifest = ref / "activations.npz", ref / "manifest.json"
    kind = r.choice(("npz-bytes", "npz-truncate", "npy-header", "manifest-field", "manifest-field", "manifest-text",
                     "random", "shapes"))
    if kind in ("npz-bytes", "npz-truncate", "random"):
        raw = bytearray(npz.read_bytes())
        if kind == "npz-bytes":
            kind += ": " + _flip(raw, 0, len(raw), r, 6)
        elif kind == "npz-truncate":
            raw = raw[:r.randrange(len(raw))]
        else:
            raw = bytearray(r.randbytes(len(raw)))
        npz.write_bytes(raw)
    elif kind == "npy-header":
        with zipfile.ZipFile(npz) as zf:
            members = {i.filename: zf.read(i) for i in zf.infolist()}
        name = r.choice(list(members))
        data = members[name]
        end = data.index(b"\n")
        header = data[10:end].decode("latin1")
        edits = (("rows", header.replace("(3,", "(1000000000,")), ("object", header.replace("'<f4'", "'|O'")),
                 ("f8", header.replace("'<f4'", "'<f8'")), ("fortran", header.replace("False", "True")),
                 ("cut", header[:-5]), ("empty", "{}"))
        what, header = r.choice(edits)
        kind += f": {name} {what}"
        body = header.encode("latin1").ljust(end - 10)[:end - 10]
        members[name] = data[:10] + body + data[end:]
        with zipfile.ZipFile(npz, "w") as zf:
            for n, d in members.items():
                zf.writestr(n, d)
    else:
        m = json.loads(manifest.read_text())
        if kind == "manifest-field":
            m[r.choice(("names", "inputs", "model", "dtype", "shapes", "activations", "format", "extra"))] = r.choice(POOL)
        elif kind == "shapes":
            m["shapes"][r.choice(list(m["shapes"]))] = [r.choice((0, 1, 3, 2 ** 40)) for _ in range(r.randint(0, 3))]
        if kind == "manifest-text":
            raw = bytearray(manifest.read_bytes())
            _flip(raw, 0, len(raw), r)
            manifest.write_bytes(raw)
        else:
            manifest.write_text(json.dumps(m))
    return f"reference.{kind}"


def mutate_audio(wav: Path, r: random.Random) -> str:
    """A WAV's RIFF header fields (sizes, channels, rate, format), its bytes, its length, its samples; a FLAC's
    or an Ogg's length (a cut compressed file)."""
    raw = bytearray(wav.read_bytes())
    if wav.suffix != ".wav":
        wav.write_bytes(raw[:r.randrange(len(raw))])
        return f"audio{wav.suffix}.truncate"
    kind = r.choice(("field", "field", "header-bytes", "truncate", "random", "nan"))
    if kind == "field":  # the canonical 44-byte header: offset, width
        offset, width = r.choice(((4, 4), (20, 2), (22, 2), (24, 4), (28, 4), (32, 2), (34, 2), (40, 4)))
        value = r.choice((0, 1, 3, 2 ** 15, 2 ** 16 - 1, 2 ** 31, 2 ** 32 - 1)) % (1 << (8 * width))
        raw[offset:offset + width] = value.to_bytes(width, "little")
        kind += f": bytes {offset}-{offset + width} = {value}"
    elif kind == "header-bytes":
        kind += ": " + _flip(raw, 0, 44, r)
    elif kind == "truncate":
        raw = raw[:r.randrange(len(raw))]
    elif kind == "random":
        raw = bytearray(r.randbytes(len(raw)))
    else:  # float samples: a NaN where a sample was
        i = 44 + 4 * r.randrange((len(raw) - 44) // 4)
        raw[i:i + 4] = struct.pack("<f", math.nan)
    wav.write_bytes(raw)
    return f"audio.{kind}"


def mutate_image(png: Path, r: random.Random) -> str:
    """A PNG's IHDR fields (width, height, bit depth, colour type), its bytes, its length."""
    raw = bytearray(png.read_bytes())
    kind = r.choice(("field", "field", "header-bytes", "truncate", "random"))
    if kind == "field":  # signature (8), IHDR length and type (8), then width 4, height 4, depth 1, colour 1
        offset, width = r.choice(((16, 4), (20, 4), (24, 1), (25, 1), (26, 1), (28, 1)))
        value = r.choice((0, 1, 3, 255, 2 ** 15, 2 ** 16 - 1, 2 ** 31 - 1, 2 ** 32 - 1)) % (1 << (8 * width))
        raw[offset:offset + width] = value.to_bytes(width, "big")
        kind += f": bytes {offset}-{offset + width} = {value}"
    elif kind == "header-bytes":
        kind += ": " + _flip(raw, 0, 64, r)
    elif kind == "truncate":
        raw = raw[:r.randrange(len(raw))]
    else:
        raw = bytearray(r.randbytes(len(raw)))
    png.write_bytes(raw)
    return f"image.{kind}"


# ---- entry points -----------------------------------------------------------------------------------------
def _load(path: Path) -> None:
    """What generate does: load, then two greedy tokens (whose logits, NaN from a mutated weight, warn)."""
    from .workbench import load_ours

    load_ours(path, max_len=8, progress=False).generate([1, 2], 2, stop_at_eos=False)


def _quantize(ckpt: Path) -> None:
    from .formats.quantize import quantize_checkpoint
    from .formats.gguf_io import GGUFCheckpoint

    out = quantize_checkpoint(ckpt, ckpt.parent / "out.gguf", progress=False)
    g = GGUFCheckpoint(out)  # what it wrote must read back
    for name in g.names:
        g.get(name)


def _reference(ref: Path) -> None:
    from .reference import load_reference

    load_reference(ref)


def _audio(wav: Path) -> None:
    from .models.audio_in import read_audio

    read_audio(wav)


def _image(png: Path) -> None:
    from .models.image_in import read_image

    read_image(png)


def run_case(fmt: str, seed: int, base: dict[str, Path], work: Path, seconds: float = 20.0,
             memory_bytes: int = 2 << 30) -> list[Outcome]:
    """Mutate a copy of the base artifact of `fmt` with `seed`, then run its entry points under limits."""
    r = random.Random(f"{fmt}-{seed}")
    case = work / f"case-{fmt}-{seed}"
    shutil.rmtree(case, ignore_errors=True)
    case.mkdir(parents=True)
    if fmt in ("safetensors", "config"):
        target = Path(shutil.copytree(base["ckpt"], case / "ckpt"))
        mutation = (mutate_safetensors if fmt == "safetensors" else mutate_config)(target, r)
        entries = (("load", _load), ("quantize", _quantize))
    elif fmt == "gguf":
        target = Path(shutil.copy(base["gguf"], case / "tiny.gguf"))
        mutation = mutate_gguf(target, r)
        entries = (("load", _load),)
    elif fmt == "reference":
        target = Path(shutil.copytree(base["ref"], case / "r"))
        mutation = mutate_reference(target, r)
        entries = (("reference", _reference),)
    elif fmt == "image":
        target = Path(shutil.copy(base["png"], case / "photo.png"))
        mutation = mutate_image(target, r)
        entries = (("image", _image),)
    else:
        ext = r.choice(("wav", "wav", "wav", "wav", "flac", "ogg"))
        target = Path(shutil.copy(base[ext], case / f"clip.{ext}"))
        mutation = mutate_audio(target, r)
        entries = (("audio", _audio),)
    out = []
    for entry, fn in entries:
        try:
            with limits(seconds, memory_bytes), warnings.catch_warnings(record=True) as warned:
                warnings.simplefilter("always", NonFiniteWarning)
                fn(target)
            if mutation in MUST_REFUSE:
                outcome, detail = "missed", "a corrupt file was accepted"
            elif any(issubclass(w.category, NonFiniteWarning) for w in warned):
                outcome, detail = "warned", str(next(w.message for w in warned if w.category is NonFiniteWarning))[:300]
            else:
                outcome, detail = "accepted", ""
        except _Timeout:
            outcome, detail = "hang", f"ran past {seconds} s"
        except MemoryError as e:
            outcome, detail = "oom", f"MemoryError: {e}"
        except OmniLabError as e:
            outcome, detail = ("refused" if case.name in str(e) else "unnamed"), str(e)[:300]
        except Exception as e:  # the point of the fuzzer: anything else is a finding
            where = traceback.extract_tb(e.__traceback__)[-1]
            outcome, detail = "raw", f"{type(e).__name__}: {str(e)[:200]} at {where.filename}:{where.lineno}"
        out.append(Outcome(case.name, fmt, mutation, entry, outcome, detail))
    shutil.rmtree(case, ignore_errors=True)
    return out


def summarize(outcomes: list[Outcome]) -> dict:
    """Counts per format, entry point and outcome; per mutation for the bad outcomes and acceptances."""
    by = Counter((o.format, o.entry, o.outcome) for o in outcomes)
    summary = {"cases": len({o.case for o in outcomes}), "runs": len(outcomes),
               "outcomes": dict(Counter(o.outcome for o in outcomes)), "per_format_entry": {}}
    for (fmt, entry, outcome), n in sorted(by.items()):
        summary["per_format_entry"].setdefault(f"{fmt}/{entry}", {})[outcome] = n
    for kind in ("accepted", "warned"):
        summary[f"{kind}_by_mutation"] = dict(Counter(o.mutation.split(":")[0] for o in outcomes if o.outcome == kind))
    summary["bad"] = [o.__dict__ for o in outcomes if o.outcome not in GOOD][:50]
    return summary
