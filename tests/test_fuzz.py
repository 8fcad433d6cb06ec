"""The suite's fuzz run (omni_lab/fuzz.py): seeded mutations of the tiny checkpoint's safetensors, config.json,
GGUF, a stored reference, a WAV clip and a PNG, each given to the entry points the command line uses. Every one must be accepted
or refused with one of our errors naming the file: never a raw exception, a hang or an out-of-memory error.
bench/fuzz.py runs the same cases by the thousand."""

import pytest

from omni_lab import fuzz

CASES_PER_FORMAT = 75  # 450 cases, about 15 s here; bench/fuzz.py for more


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from omni_lab.workbench import load_ours

    b = fuzz.build_base(tmp_path_factory.mktemp("fuzz"))
    load_ours(b["ckpt"], max_len=8, progress=False)  # the device is opened outside the cases' limits
    return b


@pytest.mark.parametrize("fmt", fuzz.FORMATS)
def test_fuzz(base, tmp_path, fmt):
    outcomes = [o for seed in range(CASES_PER_FORMAT) for o in fuzz.run_case(fmt, seed, base, tmp_path, seconds=20)]
    bad = [o for o in outcomes if o.outcome not in fuzz.GOOD]
    assert not bad, "\n".join(f"{o.mutation} -> {o.entry}: {o.outcome}: {o.detail}" for o in bad)
    # the mutations reach the checks: most cases are refused, and some mutations (weight bytes) are accepted
    refused = sum(o.outcome == "refused" for o in outcomes)
    assert refused > len(outcomes) // 2, fuzz.summarize(outcomes)["outcomes"]


def test_fuzz_counts_what_it_should(base, tmp_path, monkeypatch):
    """The runner itself: a raw error, a hang and an allocation past the limit are each counted as such."""
    import time

    import numpy as np

    from omni_lab import workbench

    for boom, expect in ((lambda *a, **k: {}["x"], "raw"), (lambda *a, **k: time.sleep(5), "hang"),
                         (lambda *a, **k: np.ones(1 << 32), "oom")):
        monkeypatch.setattr(workbench, "load_ours", boom)
        (o, _) = fuzz.run_case("config", 0, base, tmp_path, seconds=1, memory_bytes=1 << 30)
        assert o.outcome == expect, o


def test_an_accepted_cut_audio_file_is_a_miss(base, tmp_path, monkeypatch):
    """Without the container check, every cut audio case the reader takes counts as missed, none as accepted."""
    from omni_lab.models import audio_in

    monkeypatch.setattr(audio_in, "truncation", lambda path: None)
    outcomes = [o for seed in range(40) for o in fuzz.run_case("audio", seed, base, tmp_path)]
    cut = [o for o in outcomes if o.mutation in fuzz.MUST_REFUSE]
    assert {"audio.truncate", "audio.ogg.truncate"} <= {o.mutation for o in cut}
    assert {o.outcome for o in cut} <= {"refused", "missed"} and any(o.outcome == "missed" for o in cut)


def test_nan_weights_count_as_warned(base, tmp_path, monkeypatch):
    """A weight mutated to NaN is not refused: load names it (the GPU's check of the uploaded weights) and so does
    quantize (it reads every weight), each a warning, and the fuzz counts both as warned."""
    import json
    import struct

    def nan_norm(ckpt, r):
        st = ckpt / "model.safetensors"
        raw = bytearray(st.read_bytes())
        (n,) = struct.unpack("<Q", raw[:8])
        start = 8 + n + json.loads(raw[8:8 + n])["model.norm.weight"]["data_offsets"][0]
        raw[start:start + 2] = b"\xc0\x7f"  # bf16 NaN
        st.write_bytes(raw)
        return "safetensors.data-bytes"

    monkeypatch.setattr(fuzz, "mutate_safetensors", nan_norm)
    load, quantize = fuzz.run_case("safetensors", 0, base, tmp_path)
    assert load.outcome == quantize.outcome == "warned", (load, quantize)
    assert "'model.norm.weight'" in load.detail and "'model.norm.weight'" in quantize.detail
