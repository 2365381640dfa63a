"""JupyterLab as a reader meets it: `make lab`, driven in Chromium (Playwright).

The server is started by `make lab` itself (a free port, a token, no browser), serving a copy
of ``chapters/`` so that autosave can never touch the repository, with settings and
workspaces in a temporary folder. One chapter (``GPTLIB_LAB_CHAPTER``, the preface by
default: it runs in seconds) is opened by its URL and must

* open as a notebook (cells), not in the text editor;
* render MyST (no raw ``{cite}`` or directive fences left);
* show every ``solution`` cell folded;
* run all cells with no error output;
* redraw its explorable figure when a control is clicked;
* render its widgets again after the tab is closed and the chapter reopened while its kernel
  is still running, with the ``.md`` also open in a text editor tab (the state in which
  readers saw "Error displaying widget: model not found");
* leave the file on disk unchanged after JupyterLab saved it.

The test stops only the process group it started. Runs in about a minute.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = os.environ.get("GPTLIB_LAB_CHAPTER", "00_preface.md")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
REQUIRED = os.environ.get("GPTLIB_REQUIRE_BROWSER") == "1"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STAMP = ".venv/.gptlib-installed"
RUN_TIMEOUT_MS = 120_000
ERROR_MIME = ("application/vnd.jupyter.stderr", "application/vnd.jupyter.error")

pytestmark = pytest.mark.browser


def _unavailable(reason: str):
    if REQUIRED:
        pytest.fail(reason + " (GPTLIB_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_settings(folder: Path) -> None:
    """Test-only user settings: render every cell (no windowing, so the DOM holds the whole
    notebook) and no news pop-up over the page. The chapters' default viewer comes from
    lab/overrides.json, installed by `make lab`, not from here."""
    for plugin, text in {
        "@jupyterlab/notebook-extension/tracker": '{"windowingMode": "none"}',
        "@jupyterlab/apputils-extension/notification": '{"fetchNews": "false"}',
    }.items():
        path = folder / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Start `make lab` on a copy of the chapters; yield (base URL, token, served folder)."""
    if not Path(CHROMIUM).exists():
        _unavailable(
            "chromium is not installed (apt-get install -y chromium; `make test` does it as root)"
        )
    if not (ROOT / STAMP).exists():
        _unavailable("the venv is not installed (make install)")
    tmp = tmp_path_factory.mktemp("lab")
    served = tmp / "chapters"
    shutil.copytree(ROOT / "chapters", served, ignore=shutil.ignore_patterns("*.ipynb", ".*"))
    _write_settings(tmp / "settings")
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(
        os.environ,
        JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
        GPTLIB_FAST="1",
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
    )
    env.pop("MPLBACKEND", None)  # the kernel must use its inline backend, as for a reader
    args = (
        f"--port={port} --ServerApp.port_retries=0 --no-browser --ServerApp.ip=127.0.0.1 "
        f"--IdentityProvider.token={token} --LabApp.expose_app_in_browser=True"
    )
    log = open(tmp / "server.log", "w")
    # -o STAMP: use the venv as it is (never reinstall from inside a test)
    proc = subprocess.Popen(
        [
            "make",
            "--no-print-directory",
            "-o",
            STAMP,
            "lab",
            f"LAB_DIR={served}",
            f"LAB_ARGS={args}",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(
                        "`make lab` did not start:\n" + (tmp / "server.log").read_text()[-4000:]
                    )
                time.sleep(0.5)
        yield base, token, served
    finally:
        # Stop the process group this fixture started (make, jupyter lab, its kernels).
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


@pytest.fixture(scope="module")
def page(lab):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.console_errors = []
        pg.on("console", lambda m: m.type == "error" and pg.console_errors.append(m.text))
        yield pg
        browser.close()


@pytest.fixture(autouse=True)
def _shot_after(request, page):
    yield
    _screenshot(page, request.node.name)


def _notebook_text(page) -> str:
    return page.locator(".jp-NotebookPanel:visible .jp-Notebook").inner_text()


def _screenshot(page, name: str) -> None:
    """Keep what the browser showed (set GPTLIB_LAB_SHOTS=folder) for a failure or a review."""
    folder = os.environ.get("GPTLIB_LAB_SHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))


def _run_all_and_wait(page) -> None:
    # Run All before the kernel is connected runs nothing: wait for it first.
    page.wait_for_function(
        """() => {
            const nb = window.jupyterapp.shell.currentWidget;
            if (!nb || !nb.sessionContext || !nb.content || !nb.content.model) return false;
            const s = nb && nb.sessionContext;
            return s && s.isReady && s.session && s.session.kernel
                && s.session.kernel.connectionStatus === 'connected'
                && s.session.kernel.status === 'idle';
        }""",
        timeout=60_000,
        polling=250,
    )
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    # Done when the kernel is idle and every code cell has an execution count.
    try:
        _wait_until_run(page)
    except Exception:
        _screenshot(page, "run-all-timeout")
        raise


def _wait_until_run(page) -> None:
    page.wait_for_function(
        """() => {
            const nb = window.jupyterapp.shell.currentWidget;
            if (!nb || !nb.sessionContext || !nb.content || !nb.content.model) return false;
            if (!nb || !nb.content || !nb.sessionContext.session) return false;
            const kernel = nb.sessionContext.session.kernel;
            const cells = [...nb.content.model.cells].filter(c => c.type === 'code');
            // Run All stops at a raising cell: an error output also ends the wait
            const failed = cells.some(c => Array.from({length: c.outputs.length},
                                                      (_, i) => c.outputs.get(i).type).includes('error'));
            return kernel && kernel.status === 'idle'
                && (failed || cells.every(c => c.executionCount !== null));
        }""",
        timeout=RUN_TIMEOUT_MS,
        polling=500,
    )


def _error_outputs(page) -> list[str]:
    selector = ", ".join(
        f".jp-NotebookPanel:visible .jp-OutputArea-output[data-mime-type='{m}']" for m in ERROR_MIME
    )
    broken = ".jp-NotebookPanel:visible .jupyter-widgets"
    found = page.locator(selector).all_inner_texts()
    found += [t for t in page.locator(broken).all_inner_texts() if "Error displaying widget" in t]
    return found


def _explorable_image(page):
    return page.locator(".jp-NotebookPanel:visible .jupyter-widgets .widget-output img").first


def _open_chapter(page, factory: str = "Jupytext Notebook") -> None:
    page.evaluate(
        f"async () => {{ await window.jupyterapp.commands.execute('docmanager:open', "
        f"{{path: '{CHAPTER}', factory: '{factory}'}}); }}"
    )


def test_chapter_opens_as_a_notebook_and_runs(lab, page):
    base, token, served = lab
    source = (served / CHAPTER).read_text()
    solutions = sum(
        "solution" in c.metadata.get("tags", []) for c in jupytext.read(served / CHAPTER).cells
    )

    page.goto(f"{base}/lab/tree/{CHAPTER}?token={token}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=60_000)
    assert page.locator(".jp-FileEditor:visible").count() == 0, (
        "the chapter opened in the text editor"
    )
    page.wait_for_function(
        "() => document.querySelectorAll('.jp-NotebookPanel .jp-Cell').length > 5", timeout=30_000
    )

    # MyST rendered by jupyterlab-myst: no raw roles or directive fences in the markdown cells
    text = _notebook_text(page)
    assert "{cite}" not in text and "```{" not in text, "MyST markup is shown raw"

    # solutions folded: their input replaced by JupyterLab's "click to expand" placeholder
    folded = page.locator(".jp-NotebookPanel:visible .jp-InputPlaceholder").count()
    assert folded >= solutions > 0, f"{folded} folded cells, {solutions} solutions"

    _run_all_and_wait(page)
    assert not _error_outputs(page), f"error output after Run All: {_error_outputs(page)}"

    # the explorable: click a control, the figure must change
    image = _explorable_image(page)
    image.wait_for(timeout=30_000)
    before = image.get_attribute("src")
    control = page.locator(
        ".jp-NotebookPanel:visible .jupyter-widgets "
        ".widget-toggle-button, .jp-NotebookPanel:visible .jupyter-widgets .noUi-target"
    )
    target = control.last  # a toggle button, or the right end of a slider's track
    box = target.bounding_box()
    target.click(position={"x": box["width"] - 3, "y": box["height"] / 2})
    page.wait_for_function(
        """([before]) => {
            const img = [...document.querySelectorAll('.jp-NotebookPanel .jupyter-widgets .widget-output img')]
                .find(i => i.offsetParent !== null);
            return img && img.src !== before;
        }""",
        arg=[before],
        timeout=30_000,
    )
    assert "Error displaying widget" not in _notebook_text(page)

    # saved by JupyterLab: the file on disk must stay byte for byte the chapter
    page.evaluate("async () => { await window.jupyterapp.commands.execute('docmanager:save'); }")
    page.wait_for_timeout(1500)
    assert (served / CHAPTER).read_text() == source, "saving from JupyterLab rewrote the chapter"


def test_widgets_render_after_reopening_with_the_kernel_running(lab, page):
    """Close the notebook (its kernel keeps running) with the .md open in an editor tab, reopen
    it, run it again: the widgets must render (not "Error displaying widget")."""
    base, token, _ = lab
    if not page.url.startswith(base):  # run on its own
        page.goto(f"{base}/lab/tree/{CHAPTER}?token={token}")
        page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=60_000)
    _open_chapter(page, "Editor")
    page.wait_for_selector(".jp-FileEditor", timeout=30_000)
    _open_chapter(page)  # back to the notebook tab
    page.wait_for_selector(".jp-NotebookPanel:visible", timeout=30_000)
    kernel = page.evaluate(
        "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.id"
    )
    page.evaluate("async () => { await window.jupyterapp.commands.execute('application:close'); }")
    page.wait_for_timeout(1000)
    # lab/overrides.json: closing a chapter shuts its kernel down, so that a reopened chapter
    # never attaches a new widget manager to a kernel full of the old one's widgets
    page.wait_for_function(
        """async (kernel) => {
            const settings = window.jupyterapp.serviceManager.serverSettings;
            const reply = await fetch(settings.baseUrl + 'api/kernels',
                                      {headers: {Authorization: 'token ' + settings.token}});
            return !(await reply.json()).some(k => k.id === kernel);
        }""",
        arg=kernel,
        timeout=15_000,
        polling=500,
    )
    _open_chapter(page)
    page.wait_for_selector(".jp-NotebookPanel:visible .jp-Cell", timeout=60_000)
    _run_all_and_wait(page)
    assert not _error_outputs(page), f"after reopening: {_error_outputs(page)}"
    _explorable_image(page).wait_for(timeout=30_000)
    comm_errors = [e for e in page.console_errors if "comm" in e.lower() or "model not found" in e]
    assert not comm_errors, comm_errors

    # and after a page reload (a new front end on the same running kernel)
    page.reload()
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", state="attached", timeout=60_000)
    # Open the chapter again, as a reader clicks it in the file browser: it must show the
    # restored notebook, not a second view of it (see lab/jupyter_server_config.py).
    page.evaluate("async () => { await window.jupyterapp.restored; }")
    _open_chapter(page)
    views = page.evaluate("""() => [...window.jupyterapp.shell.widgets('main')]
        .filter(w => w.sessionContext && w.content && w.content.model).length""")
    assert views == 1, f"{views} notebook views of {CHAPTER} after reopening it"
    page.wait_for_selector(".jp-NotebookPanel:visible .jp-Cell", timeout=60_000)
    _run_all_and_wait(page)
    assert not _error_outputs(page), f"after a reload: {_error_outputs(page)}"
    _explorable_image(page).wait_for(timeout=30_000)
