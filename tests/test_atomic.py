"""Atomic writes (omni_lab/atomic.py) and the reference store's checks of what it loads: a kill at any moment
leaves the old complete version, the new one, or nothing; the next run leaves no debris; a corrupt reference
is a ReferenceFileError naming the file and the member or field."""

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from omni_lab import atomic
from omni_lab.errors import ReferenceFileError
from omni_lab.reference import ReferenceMismatch, load_reference, save_reference

REPO = Path(__file__).resolve().parents[1]


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_file_write_leaves_old_on_error_and_cleans_dead_leftovers(tmp_path):
    final = tmp_path / "r.json"
    atomic.write_text(final, "old")
    stale = tmp_path / f".r.json.tmp-{dead_pid()}-deadbeef"
    live = tmp_path / f".r.json.tmp-{os.getpid()}-cafecafe"  # a write of this very process, still running
    stale.write_text("half")
    live.write_text("half")
    (tmp_path / "r.json.partial").write_text("half, from a version before atomic.py")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(final) as tmp:
            tmp.write_text("new, never finished")
            raise RuntimeError
    assert final.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "r.json"]


@pytest.mark.parametrize("exchange", [True, False])
def test_directory_swap(tmp_path, monkeypatch, exchange):
    if not exchange:  # a system without renameat2: the old one is renamed aside, then removed
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    final = tmp_path / "d"
    for version in ("one", "two"):
        with atomic.atomic_dir(final) as tmp:
            (tmp / "v").write_text(version)
    assert (final / "v").read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["d"]


def test_an_old_directory_left_aside_is_put_back(tmp_path):
    final = tmp_path / "d"
    aside = tmp_path / f".d.old-{dead_pid()}-0badf00d"
    aside.mkdir()
    (aside / "v").write_text("old")
    assert atomic.clean_leftovers(final) == [aside]
    assert (final / "v").read_text() == "old"


SAVER = r"""
import sys, time
import numpy as np
import omni_lab.reference.store as st
real = st._write_npz
def slow(path, arrays):
    real(path, arrays)
    time.sleep(0.05)
st._write_npz = slow
kw = dict(model={"path": "m", "config_sha256": None, "weights_sha256": "x", "hash_mode": "full", "weight_files": []},
          inputs={"input_ids": [1, 2]}, dtype="float32", root=sys.argv[1])
for i in range(10 ** 6):
    st.save_reference("r", {"x": np.full((64, 256), float(i % 2), np.float32)}, **kw)
"""


def test_sigkill_during_reference_saves(tmp_path):
    """Kill -9 a loop of reference replacements at several moments: the name always holds a complete
    reference (all 0 or all 1), and the next save leaves nothing else behind."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(tmp_path)], cwd=REPO)
        try:
            deadline = time.time() + 60
            while not (tmp_path / "r").exists() and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.05, 0.4))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        x = load_reference(tmp_path / "r")["x"]
        assert x.shape == (64, 256) and np.unique(x).size == 1
    save_reference("r", {"x": np.zeros((2, 2))}, model={"hash_mode": "full"}, inputs={}, dtype="float32", root=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["r"]


# ---- what load_reference refuses ------------------------------------------------------------------------
@pytest.fixture
def ref(tmp_path, rng):
    return save_reference("r", {"a": rng.standard_normal((4, 6)), "b": rng.standard_normal((3, 5))},
                          model={"hash_mode": "full"}, inputs={"input_ids": [1]}, dtype="float32", root=tmp_path)


def rewrite_member(npz: Path, name: str, edit) -> None:
    """Rewrite one member's bytes through zipfile, so its CRC is right and only the edit is wrong."""
    with zipfile.ZipFile(npz) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    members[name] = edit(members[name])
    with zipfile.ZipFile(npz, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)


def same_length(header: bytes, old: bytes, new: bytes) -> bytes:
    end = header.index(b"\n")
    edited = header[:end].replace(old, new).rstrip()
    return edited + b" " * (end - len(edited)) + header[end:]


@pytest.mark.parametrize("case, match", [
    ("random bytes", "not a readable npz"),
    ("bad CRC", "not a readable npz.*CRC"),
    ("10**9 rows", r"a.npy: declares shape \[1000000000, 6\]"),
    ("object dtype", "a.npy: is object, references hold float32"),
    ("compressed", "a.npy: is compressed"),
])
def test_corrupt_npz(ref, case, match):
    npz = ref / "activations.npz"
    if case == "random bytes":
        npz.write_bytes(np.random.default_rng(1).bytes(npz.stat().st_size))
    elif case == "bad CRC":
        raw = bytearray(npz.read_bytes())
        raw[raw.index(b"\n", raw.index(b"NUMPY")) + 5] ^= 0xFF  # a byte of a.npy's data
        npz.write_bytes(bytes(raw))
    elif case == "compressed":
        with zipfile.ZipFile(npz) as zf:
            members = {i.filename: zf.read(i) for i in zf.infolist()}
        with zipfile.ZipFile(npz, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for n, data in members.items():
                zf.writestr(n, data)
    else:
        old, new = (b"(4, 6)", b"(1000000000, 6)") if case == "10**9 rows" else (b"'<f4'", b"'|O'")
        rewrite_member(npz, "a.npy", lambda data: same_length(data, old, new))
    with pytest.raises(ReferenceFileError, match=match) as e:
        load_reference(ref)
    assert "activations.npz" in str(e.value)


@pytest.mark.parametrize("edit, match", [
    (lambda m: None, "not an object"),
    (lambda m: {k: v for k, v in m.items() if k != "names"}, "names: must be a list"),
    (lambda m: {**m, "inputs": [1, 2]}, "inputs: must be an object"),
    (lambda m: {**m, "model": {"hash_mode": "md5"}}, "model: must be an object with hash_mode"),
    (lambda m: {**m, "shapes": {"a": [4, "6"]}}, "shapes.a: must be a list"),
    (lambda m: {**m, "shapes": {**m["shapes"], "a": [4, 7]}}, r"'a' is \[4, 6\] in activations.npz but \[4, 7\]"),
])
def test_bad_manifest(ref, edit, match):
    m = json.loads((ref / "manifest.json").read_text())
    (ref / "manifest.json").write_text(json.dumps(edit(m)))
    with pytest.raises((ReferenceFileError, ValueError), match=match) as e:
        load_reference(ref)
    assert "manifest.json" in str(e.value) or "activations.npz" in str(e.value)


def test_manifest_of_another_format_is_a_mismatch(ref):
    (ref / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ReferenceMismatch, match="format"):
        load_reference(ref)


def test_a_report_rewritten_over_an_old_one_is_swapped_in_whole(tmp_path, monkeypatch):
    """A compare killed after the new index.html but before report.json left the new page over the old
    report.json; now the new report is built beside the old one and takes its place only when complete.
    A folder holding other files is written into, and keeps them."""
    from omni_lab.compare import compare_sets
    from omni_lab.compare.metrics import Comparison
    from omni_lab.report import write_report

    rng = np.random.default_rng(0)
    ref = {"model.layers.0": rng.standard_normal((3, 8)).astype(np.float32)}
    out = tmp_path / "rep"
    write_report(compare_sets(ref, ref), out)
    old = {p.name: p.read_bytes() for p in out.iterdir()}
    worse = {"model.layers.0": ref["model.layers.0"] + 1}

    def killed(self, *a, **k):
        raise KeyboardInterrupt  # where a SIGKILL between the page and report.json would stop it

    monkeypatch.setattr(Comparison, "save_json", killed)
    with pytest.raises(KeyboardInterrupt):
        write_report(compare_sets(worse, ref), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old and [p.name for p in tmp_path.iterdir()] == ["rep"]
    monkeypatch.undo()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    write_report(compare_sets(worse, ref), mine)
    assert (mine / "notes.txt").read_text() == "keep" and (mine / "report.json").is_file()


def test_a_quantization_report_over_an_old_one_is_swapped_in_whole(tmp_path):
    """quant_report.write_pages (the text, vocoder and speech reports): killed between its files, the old report
    stays whole; a finished one replaces it whole (an old figure the new report does not draw is gone); a
    folder holding the user's files keeps them."""
    import matplotlib.pyplot as plt

    from omni_lab.report.quant_report import write_pages

    class Report:
        def __init__(self, value):
            self.value = value

        def to_json(self):
            return {"value": self.value}

    def figure(report):
        fig, ax = plt.subplots()
        ax.plot([0, report.value])
        return fig

    def page(report, images, title):
        return f"<h1>{title} {report.value}</h1>" + "".join(f"<img src={f}>" for f, _ in images)

    out = tmp_path / "q"
    write_pages(Report(1), out, [("a.png", "A", figure), ("old.png", "old", figure)], page, "t")
    old = {p.name: p.read_bytes() for p in out.iterdir()}

    def killed(report):
        raise KeyboardInterrupt  # a kill after the first figure, before report.json and the page

    with pytest.raises(KeyboardInterrupt):
        write_pages(Report(2), out, [("a.png", "A", figure), ("b.png", "B", killed)], page, "t")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old and [p.name for p in tmp_path.iterdir()] == ["q"]
    write_pages(Report(3), out, [("a.png", "A", figure)], page, "t", sounds=[("s.wav", np.zeros(160), 16000)])
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "index.html", "report.json", "s.wav"]
    assert json.loads((out / "report.json").read_text()) == {"value": 3}
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    write_pages(Report(4), mine, [("a.png", "A", figure)], page, "t")
    assert (mine / "notes.txt").read_text() == "keep" and (mine / "index.html").is_file()
