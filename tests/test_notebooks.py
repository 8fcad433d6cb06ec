"""Every notebook in notebooks/ runs top to bottom, headless, on the tiny model, writing only into a tmp dir.

Parameters are injected papermill-style: a cell tagged "injected-parameters" after the one tagged
"parameters", assigning only the names that cell defines. The kernel is this interpreter (a kernelspec
written into a tmp JUPYTER_PATH), so the notebooks see the omni_lab under test.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
CELL_TIMEOUT_S = 90


def write_kernelspec(jupyter_dir: Path, name: str = "python3") -> Path:
    """A kernelspec whose python is sys.executable, under jupyter_dir (to be put first on JUPYTER_PATH)."""
    spec = jupyter_dir / "kernels" / name
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python 3 ({Path(sys.executable).parent.parent.name})", "language": "python",
    }))
    return jupyter_dir


def parameters_cell(nb) -> int:
    """Index of the cell tagged "parameters", which must be the first code cell."""
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert tagged, "no cell tagged 'parameters'"
    assert tagged[0] == code[0], "the parameters cell must be the first code cell"
    return tagged[0]


def inject_parameters(nb, params: dict):
    """Insert an "injected-parameters" cell after the parameters cell, setting the names it defines."""
    i = parameters_cell(nb)
    tree = ast.parse(nb.cells[i].source)
    defined = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
               if isinstance(t, ast.Name)}
    lines = [f"{k} = {v!r}" for k, v in params.items() if k in defined]
    cell = nbformat.v4.new_code_cell("\n".join(lines))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(i + 1, cell)
    return nb


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tmp dir with the tiny model prebuilt, a references root and a kernelspec; JUPYTER_PATH set."""
    from omni_lab.demo import ensure_tiny

    tmp = tmp_path_factory.mktemp("notebooks")
    model = ensure_tiny(tmp / "models" / "tiny")
    jupyter = write_kernelspec(tmp / "jupyter")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(jupyter))
        yield {"tmp": tmp, "params": {"MODEL_DIR": str(model), "WORK_DIR": str(tmp / "runs"),
                                      "REFERENCE_ROOT": str(tmp / "reference_data")}}


def execute(path: Path, workspace: dict):
    from nbclient import NotebookClient

    nb = inject_parameters(nbformat.read(path, as_version=4), workspace["params"])
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S, startup_timeout=60,
                            resources={"metadata": {"path": str(workspace["tmp"])}})
    client.execute()
    return nb


def outputs(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS][:3] == ["00_gpu_check.ipynb", "01_extract_reference.ipynb",
                                              "02_layer_compare.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_stripped(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    parameters_cell(nb)
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None, f"{path.name}: outputs not stripped"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, workspace):
    nb = execute(path, workspace)
    errors = [o for o in outputs(nb) if o.output_type == "error"]
    assert not errors, f"{path.name}: {errors[0].ename}: {errors[0].evalue}"
    mimes = {m for o in outputs(nb) for m in o.get("data", {})}
    if path.stem.startswith("00"):
        assert "image/png" in mimes, "00: no selfcheck bar chart"
    if path.stem.startswith("01"):
        assert any((workspace["tmp"] / "reference_data").glob("*/manifest.json")), "01: no reference in the tmp root"
    if path.stem.startswith("02"):
        assert "image/png" in mimes, "02: no inline figure"
        assert WIDGET_MIME in mimes, "02: no widget view (the explorer)"
        assert any((workspace["tmp"] / "runs").glob("*/index.html")), "02: no HTML report in WORK_DIR"
    if path.stem.startswith("04"):
        html = [o["data"]["text/html"] for o in outputs(nb) if "text/html" in o.get("data", {})]
        assert sum("<audio" in h for h in html) >= 3, "04: not three players (Transformers, ours, the stream)"
        assert "image/png" in mimes and WIDGET_MIME in mimes, "04: no figure or no explorer"
        assert (workspace["tmp"] / "runs" / "compare-code2wav" / "index.html").is_file(), "04: no report"
    if path.stem.startswith("05"):
        html = [o["data"]["text/html"] for o in outputs(nb) if "text/html" in o.get("data", {})]
        assert sum("<audio" in h for h in html) >= 5, "05: not five players (Transformers and ours, then with Q8_0)"
        assert "image/png" in mimes, "05: no figure"
        assert (workspace["tmp"] / "runs" / "quant-speech" / "index.html").is_file(), "05: no speech quant report"
    if path.stem.startswith("06"):
        html = [o["data"]["text/html"] for o in outputs(nb) if "text/html" in o.get("data", {})]
        assert any("<audio" in h for h in html), "06: no player"
        assert "image/png" in mimes and WIDGET_MIME in mimes, "06: no figure or no explorer"
        assert (workspace["tmp"] / "runs" / "compare-audio" / "index.html").is_file(), "06: no report"
        text = "".join(o.get("text", "") for o in outputs(nb))
        assert "all within bounds" in text and "audio_tower.layers.1.fc1" in text, "06: no clean pass or no planted bug"
    if path.stem.startswith("07"):
        assert "image/png" in mimes, "07: no figure"
        assert (workspace["tmp"] / "runs" / "compare-image" / "index.html").is_file(), "07: no report"
        text = "".join(o.get("text", "") for o in outputs(nb))
        assert "all within bounds" in text and "most: feature" in text, "07: no clean pass or no DeepStack ranking"
