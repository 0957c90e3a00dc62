"""The live explorer in a real browser: JupyterLab on localhost, headless Chromium driven by Selenium.

`make browser-test` runs this folder (not `make test`: it needs Debian's `chromium` and
`chromium-driver`, which .ci/run installs when they are missing). Each test skips, saying why, when
chromium, chromedriver, selenium, jupyterlab or anywidget is missing.

test_click_changes_the_picture_and_the_iou: the walkthrough's end-to-end notebook (06), copied to a
temporary folder (the tracked notebooks are never opened), runs in JupyterLab; a click on its explorer's image
must change the picture on the canvas and the IoU shown on the masks; choosing token self-attention
must redraw without a run (same IoU) with the token names beside the matrix; opening the trace panel
must show the shape table; the browser's log must hold no SEVERE entry; every request of the page must
go to the local server (anywidget's JupyterLab extension among them: nothing from the internet);
`git status --porcelain` must be what it was before (clean in CI).

test_html_export_shows_the_picture_offline: the same notebook executed and exported by nbconvert as
`make html` does (widget state not stored): the page holds the explorer's picture and says that it
needs a kernel, and loads no widget manager from the internet.

Set SAM_EXPLAIN_SCREENSHOTS=DIR to keep screenshots of the page before and after the click.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1300,1100"]
WALKTHROUGH = ROOT / "notebooks" / "06_end_to_end.ipynb"  # its explorer: toy scene SCENE, one click made
SCENE = 23
START_TIMEOUT = 120.0  # seconds for JupyterLab to answer
RUN_TIMEOUT = 240.0  # seconds for the kernel to start and the explorer to draw (a busy 2-core machine)
ANSWER_TIMEOUT = 60.0  # seconds for a click's picture to come back


def need(module: str) -> None:
    pytest.importorskip(module, reason=f"the browser test needs {module} (pip install -e '.[dev,notebook]')")


def explorer_notebook(folder: Path) -> Path:
    """A copy of the walkthrough's end-to-end notebook in ``folder`` (its kernel is named, so none is
    asked for); the test's click positions assume its explorer shows toy scene SCENE."""
    import nbformat

    nb = nbformat.read(WALKTHROUGH, as_version=4)
    sources = "\n".join(cell.source for cell in nb.cells)
    assert f"make_scene(seed={SCENE})" in sources and "se.live_explorer(model, scene.image)" in sources, \
        f"{WALKTHROUGH.name} no longer shows toy scene {SCENE} in its explorer: update SCENE"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    path = folder / WALKTHROUGH.name
    nbformat.write(nb, path)
    return path


def git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jupyter_env(tmp: Path) -> dict:
    """Every Jupyter and IPython folder in the temporary folder: nothing is written elsewhere."""
    env = dict(os.environ)
    for var, sub in [("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                     ("JUPYTER_DATA_DIR", "data"), ("IPYTHONDIR", "ipython"), ("MPLCONFIGDIR", "mpl"),
                     ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"), ("JUPYTERLAB_SETTINGS_DIR", "settings")]:
        (tmp / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(tmp / sub)
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    env.pop("SAM_CHECKPOINT", None)  # the notebook's real-SAM cells stay skipped
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as answer:  # localhost only
        return json.loads(answer.read().decode())


class Lab:
    """JupyterLab on 127.0.0.1 with a token, rooted at a temporary folder; no news or update checks
    (they would go to the internet); the app exposed as window.jupyterapp so the test can run cells."""

    def __init__(self, root: Path, tmp: Path) -> None:
        self.port, self.token = free_port(), secrets.token_hex(16)
        env = jupyter_env(tmp)
        config = {"LabApp": {"news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
                             "expose_app_in_browser": True}}
        (Path(env["JUPYTER_CONFIG_DIR"]) / "jupyter_server_config.json").write_text(json.dumps(config))
        settings = Path(env["JUPYTERLAB_SETTINGS_DIR"]) / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True, exist_ok=True)  # and no "get Jupyter news?" question over the page
        (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
        args = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={self.port}", "--ServerApp.ip=127.0.0.1",
                f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
                "--ServerApp.port_retries=0"]
        if hasattr(os, "getuid") and os.getuid() == 0:
            args.append("--allow-root")
        self.log = open(tmp / "jupyterlab.log", "w")
        self.process = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=root)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                get_json(f"{self.url}/api/status?token={self.token}")
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start; its log: {tmp / 'jupyterlab.log'}") from None
                time.sleep(0.5)

    def stop(self) -> None:
        """Shut the kernels down through the server, then the server (the process this test started)."""
        try:
            for kernel in get_json(f"{self.url}/api/kernels?token={self.token}"):
                request = urllib.request.Request(f"{self.url}/api/kernels/{kernel['id']}?token={self.token}",
                                                 method="DELETE")
                urllib.request.urlopen(request, timeout=10).close()
        except OSError:
            pass
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        self.log.close()


def chrome(tmp: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS + [f"--user-data-dir={tmp / 'chrome-profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(tmp / "chromedriver.log")), options=options)


def wait_for(driver, script: str, timeout: float, what: str):
    """Poll a JavaScript expression until it returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


SHOWN = """
const canvas = document.querySelector('.se-live canvas.se-canvas');
if (!canvas || !canvas.dataset.seq) return null;
const ious = [...document.querySelectorAll('.se-live .se-iou')].map((e) => e.textContent);
return {seq: Number(canvas.dataset.seq), picture: canvas.toDataURL('image/png'), ious,
        width: canvas.width, height: canvas.height, cssWidth: canvas.getBoundingClientRect().width,
        status: document.querySelector('.se-live .se-status').textContent};
"""


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver "
                    "(apt-get install -y chromium chromium-driver)")
def test_click_changes_the_picture_and_the_iou(tmp_path):
    for module in ("selenium", "jupyterlab", "anywidget", "nbformat"):
        need(module)
    from selenium.webdriver.common.action_chains import ActionChains

    from sam_explain.toy import click_inside, make_scene

    before = git_status()
    root = tmp_path / "notebooks"
    root.mkdir()
    notebook = explorer_notebook(root)
    shots = os.environ.get("SAM_EXPLAIN_SCREENSHOTS")
    lab = Lab(root, tmp_path)
    driver = None
    try:
        driver = chrome(tmp_path)
        driver.get(f"{lab.url}/lab/tree/{notebook.name}?token={lab.token}")
        wait_for(driver, "return !!(window.jupyterapp && document.querySelector('.jp-NotebookPanel .jp-Cell'))",
                 START_TIMEOUT, "the notebook to open")
        wait_for(driver, "const w = window.jupyterapp.shell.currentWidget; return !!(w && w.sessionContext "
                 "&& w.sessionContext.session && w.sessionContext.session.kernel)", RUN_TIMEOUT, "a kernel")
        driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")
        first = wait_for(driver, SHOWN, RUN_TIMEOUT, "the explorer's first picture")
        if shots:
            driver.save_screenshot(str(Path(shots) / "explorer_before.png"))
        assert first["width"] >= 512 and first["cssWidth"] >= 512 * 0.99, first  # sharp, one to one
        assert len(first["ious"]) == 3 and all("IoU" in text for text in first["ious"]), first["ious"]

        # a foreground click deep inside another object than the notebook's click (on a nested part)
        scene = make_scene(seed=SCENE)
        other = int(np.argmin(scene.has_part))
        assert not scene.has_part[other]
        x, y = click_inside(scene.object_masks[other])
        canvas = driver.find_element("css selector", ".se-live canvas.se-canvas")
        rect = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];",
                                     canvas)
        main_css = 512.0  # the main panel's long side in CSS pixels; the toy image is square
        dx, dy = x * main_css / 256 - rect[0] / 2, y * main_css / 256 - rect[1] / 2  # from the centre
        ActionChains(driver).move_to_element_with_offset(canvas, dx, dy).click().perform()
        after = wait_for(driver, SHOWN.replace("return {seq", f"if (Number(canvas.dataset.seq) <= {first['seq']})"
                                               " return null;\nreturn {seq"), ANSWER_TIMEOUT, "the click's picture")
        if shots:
            driver.save_screenshot(str(Path(shots) / "explorer_after.png"))
        assert "2 point(s)" in after["status"], after["status"]
        assert after["picture"] != first["picture"], "the picture did not change"
        assert after["ious"] != first["ious"], f"the IoU shown did not change: {after['ious']}"

        # a control: token self-attention, drawn without running the decoder (the IoU stays), names beside it
        from selenium.webdriver.support.ui import Select

        Select(driver.find_element("css selector", ".se-live select.se-kind")).select_by_value('"token_self"')
        matrix = wait_for(driver, SHOWN.replace("return {seq", f"if (Number(canvas.dataset.seq) <= {after['seq']})"
                                                " return null;\nreturn {seq"), ANSWER_TIMEOUT, "the matrix")
        assert matrix["ious"] == after["ious"] and matrix["picture"] != after["picture"]
        names = driver.execute_script("return [...document.querySelectorAll('.se-live .se-row-name')]"
                                      ".map((e) => e.textContent);")
        assert names[:6] == ["iou", "mask0", "mask1", "mask2", "mask3", "point0 (+)"], names
        # the shape trace, computed when its panel is opened
        driver.find_element("css selector", ".se-live details.se-trace summary").click()
        wait_for(driver, "return document.querySelector('.se-live .se-trace-body table.sam-trace') !== null",
                 ANSWER_TIMEOUT, "the shape trace")
        if shots:
            driver.save_screenshot(str(Path(shots) / "explorer_matrix_and_trace.png"))

        severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not severe, f"the browser logged SEVERE entries: {severe}"
        # offline: every request the page made went to the local server (anywidget's extension included)
        requested = {json.loads(entry["message"])["message"]["params"]["request"]["url"]
                     for entry in driver.get_log("performance")
                     if '"Network.requestWillBeSent"' in entry["message"]}
        network = [u for u in requested if u.split(":", 1)[0] in ("http", "https", "ws", "wss")]  # not chrome://
        elsewhere = sorted(u for u in network if not u.startswith((lab.url, f"ws://127.0.0.1:{lab.port}/")))
        assert not elsewhere, f"the page asked for: {elsewhere}"
        assert any("/lab/extensions/anywidget/" in u for u in requested), "anywidget's extension was not loaded"
    finally:
        if driver is not None:
            driver.quit()
        lab.stop()
    assert git_status() == before, "the browser test changed the working tree"


def test_html_export_shows_the_picture_offline(tmp_path):
    """`make html`'s export (nbconvert, widget state not stored) of the explorer cell."""
    for module in ("nbconvert", "nbformat", "anywidget", "ipykernel"):
        need(module)
    before = git_status()
    notebook = explorer_notebook(tmp_path)
    env = jupyter_env(tmp_path)
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "--execute",
                    "--ExecutePreprocessor.store_widget_state=False", "--output-dir", str(tmp_path / "html"),
                    str(notebook)], env=env, cwd=tmp_path, check=True, capture_output=True, timeout=RUN_TIMEOUT)
    page = (tmp_path / "html" / notebook.with_suffix(".html").name).read_text(encoding="utf-8")
    assert "Live explorer: it needs a running kernel." in page
    assert 'src="data:image/png;base64,' in page  # the picture, inline
    assert "html-manager" not in page and "application/vnd.jupyter.widget-state+json" not in page
    assert git_status() == before
