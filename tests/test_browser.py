"""notebooks/02_layer_compare and an HTML report in a real browser: headless Debian Chromium driven by Playwright.

What nbclient cannot see: that the figure renders as an <img> and that the ipywidgets explorer renders as
widget DOM (the widget manager extension loads and the comm to the kernel works). The notebook is opened in
JupyterLab, "Run All Cells" is chosen from the Run menu as a user would, and the page is checked once every
code cell has its execution count. A screenshot of the explorer is left in the tmp dir.

The HTML report of a comparison with a waveform is opened from disk: its two <audio> players must load their
WAV files (32-bit float, which Chromium must decode) and report the waveform's duration.

Everything the server writes (settings, workspaces, runtime files, the run's outputs) goes to a tmp dir;
the server is always stopped. Skipped only when /usr/bin/chromium or the playwright package is absent
(scripts/test.sh installs Debian's chromium where apt is usable; Playwright never downloads a browser here).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from test_audio import waveform_comparison
from test_notebooks import inject_parameters, write_kernelspec

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "02_layer_compare.ipynb"
VOCODER_NOTEBOOK = NOTEBOOK.with_name("04_vocoder.ipynb")
SERVER_START_S = 60
PAGE_LOAD_S = 60
RUN_ALL_S = 90

if not Path(CHROMIUM).is_file():
    pytest.skip(f"{CHROMIUM} is absent (Debian package 'chromium'; scripts/test.sh installs it where apt is "
                "usable)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is absent (pip install "
                               "playwright; it is in the [dev] extra)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"jupyter lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"jupyter lab did not answer {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        # The server shuts its kernels down on SIGTERM; a kernel left by a SIGKILL still exits on its own,
        # since it watches its parent (JPY_PARENT_PID).
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on a free port with a random token, serving a tmp copy of 02 whose parameters point at a
    prebuilt tiny model and tmp output dirs; yields (base url, token, tmp dir)."""
    from omni_lab.demo import ensure_tiny, ensure_tiny_omni

    root = tmp_path / "root"
    root.mkdir()
    params = {"MODEL_DIR": str(ensure_tiny(tmp_path / "models" / "tiny")),
              "OMNI_DIR": str(ensure_tiny_omni(tmp_path / "models" / "omni-tiny")),
              "WORK_DIR": str(tmp_path / "runs"), "REFERENCE_ROOT": str(tmp_path / "reference_data")}
    for path in (NOTEBOOK, VOCODER_NOTEBOOK):
        nbformat.write(inject_parameters(nbformat.read(path, as_version=4), params), root / path.name)
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # Render every cell (no virtual scrolling), so outputs below the fold are in the DOM to be checked; start
    # the notebook's own kernel without asking.
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none",
                                                                      "autoStartDefaultKernel": True}))
    apputils = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    apputils.mkdir(parents=True)
    # No "get notified about Jupyter news?" toast over the page (and no fetch of the news feed).
    (apputils / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))

    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_PATH=str(write_kernelspec(tmp_path / "jupyter")),
               JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_DATA_DIR=str(tmp_path / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    log = tmp_path / "jupyter.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
             f"--ServerApp.root_dir={root}", f"--LabApp.user_settings_dir={tmp_path / 'lab-settings'}",
             f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
             "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
             "--LabApp.extension_manager=readonly"] + (["--allow-root"] if os.geteuid() == 0 else []),
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_server(f"{base}/api/status?token={token}", proc, log, SERVER_START_S)
        yield base, token, tmp_path
    finally:
        stop(proc)


def kernel_idle(page) -> None:
    """Wait until the notebook has a kernel and every kernel status indicator says idle.

    Before the session attaches its kernel the toolbar says "No Kernel" and the indicator already says idle;
    Run All at that moment opens a "Select Kernel" dialog instead of running.
    """
    page.wait_for_function("""() => {
        const name = document.querySelector('.jp-NotebookPanel .jp-Toolbar-kernelName');
        const all = [...document.querySelectorAll('.jp-Notebook-ExecutionIndicator')];
        return name && !/No Kernel/.test(name.textContent) && all.length > 0
            && all.every(e => e.dataset.status === 'idle');
    }""")


PROMPTS_JS = "[...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')]"


def run_all(page, base: str, token: str, name: str) -> str:
    """Open notebook `name` in JupyterLab, Run All Cells from the Run menu, wait for every cell; its output text."""
    page.goto(f"{base}/lab/tree/{name}?token={token}&reset", timeout=PAGE_LOAD_S * 1000)
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-CodeCell")
    kernel_idle(page)  # Run All while the kernel is still starting runs nothing

    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

    # Done when every code cell shows "[k]:" (not "[ ]:" or "[*]:") and the kernel is idle again.
    n = page.locator(".jp-NotebookPanel .jp-CodeCell").count()
    try:
        page.wait_for_function(f"n => {{ const p = {PROMPTS_JS}; "
                               "return p.length === n && p.every(e => /\\[\\d+\\]/.test(e.textContent)); }",
                               arg=n, timeout=RUN_ALL_S * 1000)
    except sync_api.TimeoutError:
        prompts = page.evaluate(f"() => {PROMPTS_JS}.map(e => e.textContent)")
        raise AssertionError(f"Run All did not finish within {RUN_ALL_S} s; input prompts {prompts}") from None
    kernel_idle(page)
    text = "\n".join(page.locator(".jp-NotebookPanel .jp-OutputArea-output").all_inner_texts())
    assert "Traceback" not in text, text[-3000:]
    return text


def check_notebook(page, base: str, token: str, shot: Path) -> None:
    text = run_all(page, base, token, NOTEBOOK.name)
    assert "all within bounds" in text, text[-3000:]

    figures = page.locator(".jp-NotebookPanel .jp-RenderedImage img")
    assert figures.count() >= 2, "the figures did not render as <img>"
    assert figures.first.evaluate("img => img.complete && img.naturalWidth > 100"), "the first figure is empty"
    figures.first.screenshot(path=str(shot.with_name("02_metrics_vs_layer.png")))

    explorer = page.locator(".jp-NotebookPanel .jupyter-widgets.widget-vbox").last
    explorer.wait_for(state="visible")
    selects = explorer.locator(".widget-dropdown select")
    assert selects.count() == 3, "the explorer's dropdowns did not render"
    assert explorer.locator(".widget-slider, .widget-hslider").count() == 1, "the explorer's token slider is missing"
    plot = explorer.locator("img").first  # the Image widget the explorer draws into
    page.wait_for_function("img => img.complete && img.naturalWidth > 100", arg=plot.element_handle())

    # A round trip through the kernel: picking layer 1 re-renders the plot for a layer-1 activation.
    selects.nth(1).select_option(label="1")
    explorer.locator(".widget-html", has_text="model.layers.1.").first.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 100", arg=plot.element_handle())
    explorer.scroll_into_view_if_needed()
    page.screenshot(path=str(shot))


def with_page(tmp: Path, check) -> None:
    """Run check(page) in headless Chromium, with a screenshot of the page left in tmp on a failure."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(PAGE_LOAD_S * 1000)
            try:
                check(page)
            except Exception:
                page.screenshot(path=str(tmp / "failure.png"))
                print(f"screenshot of the failure: {tmp / 'failure.png'}; server log: {tmp / 'jupyter.log'}")
                raise
        finally:
            browser.close()


def test_layer_compare_notebook_renders_in_jupyterlab(lab):
    base, token, tmp = lab
    shot = tmp / "02_layer_compare.png"
    with_page(tmp, lambda page: check_notebook(page, base, token, shot))
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_vocoder_notebook_plays_both_waveforms_in_jupyterlab(lab):
    """04's players (Transformers, ours, the stream) load in JupyterLab and last as long as the waveforms."""
    from omni_lab.models.code2wav import SAMPLE_RATE, Code2WavConfig

    base, token, tmp = lab
    cfg = Code2WavConfig.from_dict(json.loads((tmp / "models" / "omni-tiny" / "config.json").read_text()))
    frames = round(2.0 * 12.5)  # the notebook's default SECONDS
    found = {}

    def check(page):
        text = run_all(page, base, token, VOCODER_NOTEBOOK.name)
        assert "every module within its bounds" in text, text[-3000:]
        page.wait_for_function("() => { const a = [...document.querySelectorAll('.jp-NotebookPanel audio')]; "
                               "return a.length >= 3 && a.every(e => e.readyState >= 1 || e.error); }")
        found["players"] = page.evaluate("() => [...document.querySelectorAll('.jp-NotebookPanel audio')].map("
                                         "e => ({ready: e.readyState, duration: e.duration, error: e.error && e.error.code}))")

    with_page(tmp, check)
    players = found["players"]
    assert all(pl["error"] is None and pl["ready"] >= 1 for pl in players), players
    one_shot = cfg.waveform_samples(frames) / SAMPLE_RATE
    assert [pl["duration"] for pl in players[:2]] == [pytest.approx(one_shot, abs=1e-3)] * 2, players


def test_report_audio_players_load_in_chromium(tmp_path, rng):
    from omni_lab.report import write_report

    seconds, rate = 0.5, 22050  # not the default rate: the files must carry theirs
    index = write_report(waveform_comparison(rng, rate=rate, seconds=seconds), tmp_path / "report")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(PAGE_LOAD_S * 1000)
            page.goto(index.as_uri())
            # readyState >= 1 (HAVE_METADATA): the file was fetched and decoded far enough to know its length
            page.wait_for_function("() => { const a = [...document.querySelectorAll('audio')]; "
                                   "return a.length === 2 && a.every(e => e.readyState >= 1 || e.error); }")
            players = page.evaluate("() => [...document.querySelectorAll('audio')].map(e => ({src: e.currentSrc, "
                                    "ready: e.readyState, duration: e.duration, error: e.error && e.error.code}))")
            images = page.evaluate("() => [...document.images].map(i => i.complete && i.naturalWidth > 100)")
        finally:
            browser.close()
    assert [pl["src"].rsplit("/", 1)[-1] for pl in players] == ["code2wav_ours.wav", "code2wav_ref.wav"]
    for pl in players:
        assert pl["error"] is None and pl["ready"] >= 1, players
        assert pl["duration"] == pytest.approx(seconds, abs=1e-3), players
    assert images and all(images), "a figure of the report did not load"
