"""Real-browser tests: notebook 04 in JupyterLab and the Voila expert-load app, driven by Playwright.

Headless Debian Chromium (``/usr/bin/chromium``, installed by ``make browser``) drives a JupyterLab
and a Voila server started here on 127.0.0.1 (token, free port, isolated settings/workspace/runtime
folders, copies of the notebooks so the repository is never modified). The tests run the notebook,
move widgets with the keyboard like a learner, and check that the plot image changes and that no
widget fails to display. Screenshots go to ``test-output/``; with ``MOE_LAB_SCREENSHOT=1`` the
dashboard screenshot is also copied to ``docs/img/dashboard.png`` (the README picture).

Each slider move -> new plot latency is measured and printed (never asserted: timings are noisy).
Servers are stopped by their PID, browsers closed, and any process left with our runtime folder in
its command line is reported and killed, also when a test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
OUT = ROOT / "test-output"
NB04 = "04_routing_visualization.ipynb"
APP = "app_expert_load.ipynb"
TOKEN = "moe-lab-browser-test"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
WIDGET_ERRORS = ("Error displaying widget", "model not found", "Failed to load model class")

if not os.path.exists(CHROMIUM):
    print(f"\nbrowser tests skipped: {CHROMIUM} is missing (run `make browser` as root to install it)")
    pytest.skip(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium) to enable the "
                "real-browser tests", allow_module_level=True)

playwright_sync = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
expect = playwright_sync.expect


# ----------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """Copies of the notebooks + isolated Jupyter folders (data, runtime, settings, workspaces).

    The data folder holds a ``moe-lab`` kernelspec running this interpreter, so the notebooks'
    kernel exists even on a machine where ``make install`` has not registered it.
    """
    base = tmp_path_factory.mktemp("browser")
    work = base / "notebooks"
    work.mkdir()
    for nb in (NB04, APP):
        src = ROOT / "notebooks" / nb
        if not src.exists():
            pytest.fail(f"notebooks/{nb} is missing")
        shutil.copy(src, work / nb)
    kernel = base / "data" / "kernels" / "moe-lab"
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "MoE Lab (MindSpore)", "language": "python"}))
    notify = base / "settings" / "@jupyterlab" / "apputils-extension"
    notify.mkdir(parents=True)  # no "news" toast over the page
    (notify / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                          "checkForUpdates": False}))
    (base / "workspaces").mkdir()
    env = dict(os.environ, JUPYTER_DATA_DIR=str(base / "data"), JUPYTER_CONFIG_DIR=str(base / "config"),
               GLOG_v="3", PYTHONUNBUFFERED="1")
    return {"base": base, "work": work, "env": env}


class Server:
    """A server process started by us; ``stop()`` ends it by PID (SIGTERM, then SIGKILL)."""

    def __init__(self, name: str, cmd: list[str], sandbox: dict):
        base = sandbox["base"]
        # a runtime folder of its own: its kernels' connection files (and so their command lines)
        # mention it, which is how leftovers of this server, and only this one, are found
        self.name, self.log_path, self.runtime = name, base / f"{name}.log", base / f"runtime-{name}"
        self.runtime.mkdir()
        env = dict(sandbox["env"], JUPYTER_RUNTIME_DIR=str(self.runtime))
        self.log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(cmd, env=env, cwd=sandbox["work"], stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log_tail(self, lines: int = 30) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_http(self, url: str, timeout: float) -> float:
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - start
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"{self.name} did not answer {url} within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the server shuts its kernels down on SIGTERM
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()
        leftovers = kill_processes_mentioning(str(self.runtime))
        if leftovers:
            print(f"\n{self.name}: killed {len(leftovers)} leftover kernel process(es): {leftovers}")


def kill_processes_mentioning(marker: str) -> list[int]:
    """Kill (by PID) processes whose command line contains ``marker`` (our kernels' runtime folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass
    return found


def root_flag() -> list[str]:
    return ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []


@pytest.fixture(scope="module")
def lab(sandbox):
    base, port = sandbox["base"], free_port()
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", *root_flag(), f"--port={port}",
           "--ServerApp.port_retries=0", "--ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}",
           f"--ServerApp.root_dir={sandbox['work']}", f"--LabApp.workspaces_dir={base / 'workspaces'}",
           f"--LabApp.user_settings_dir={base / 'settings'}", "--LabApp.expose_app_in_browser=True",
           "--ServerApp.open_browser=False"]
    server = Server("lab", cmd, sandbox)
    try:
        url = f"http://127.0.0.1:{port}"
        seconds = server.wait_http(f"{url}/api/status?token={TOKEN}", timeout=90)
        print(f"\njupyter lab (pid {server.proc.pid}) answered after {seconds:.1f} s")
        yield {"url": url, "server": server}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def voila(sandbox):
    port = free_port()
    cmd = [sys.executable, "-m", "voila", str(sandbox["work"] / APP), "--no-browser", "--Voila.ip=127.0.0.1",
           f"--port={port}", "--ServerApp.port_retries=0"]
    server = Server("voila", cmd, sandbox)
    try:
        url = f"http://127.0.0.1:{port}"
        # Voila runs the notebook when the page is requested: wait for the port, not for a page
        start = time.perf_counter()
        while time.perf_counter() - start < 90:
            if server.proc.poll() is not None:
                pytest.fail(f"voila exited with code {server.proc.returncode}:\n{server.log_tail()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        else:
            pytest.fail(f"voila did not listen on port {port} within 90 s:\n{server.log_tail()}")
        seconds = time.perf_counter() - start
        print(f"\nvoila (pid {server.proc.pid}) listening after {seconds:.1f} s")
        yield {"url": url, "server": server}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    with playwright_sync.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
    context.set_default_timeout(60_000)
    pg = context.new_page()
    pg.console_messages = []
    pg.on("console", lambda m: pg.console_messages.append(f"{m.type}: {m.text}"))
    try:
        yield pg
    finally:
        context.close()


# ----------------------------------------------------------------------------- page helpers


def dashboard(page, css: str):
    return page.locator(f".{css}").first


def plot_src(page, css: str) -> str:
    img = dashboard(page, css).locator(".widget-output img").last
    expect(img).to_be_visible(timeout=60_000)
    return img.get_attribute("src")


def slider(page, css: str, label: str):
    return dashboard(page, css).locator(".widget-slider", has=page.locator(".widget-label", has_text=label)).first


def wait_new_plot(page, css: str, old_src: str, timeout: float = 30_000) -> None:
    try:
        page.wait_for_function(
            """([css, old]) => { const imgs = document.querySelectorAll(`.${css} .widget-output img`);
                                 return imgs.length > 0 && imgs[imgs.length - 1].src !== old; }""",
            arg=[css, old_src], timeout=timeout, polling=20)
    except playwright_sync.TimeoutError:
        OUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUT / f"timeout_{css}.png"))
        output = dashboard(page, css).locator(".widget-output").last.inner_text()[:500]
        pytest.fail(f"no new plot in .{css} within {timeout / 1000:.0f} s (screenshot test-output/timeout_{css}.png); "
                    f"output area text: {output!r}")


def step_slider(page, css: str, label: str, key: str = "ArrowRight") -> float:
    """Press ``key`` once on the slider ``label`` and return the seconds until the new plot is shown."""
    old = plot_src(page, css)
    handle = slider(page, css, label).locator(".noUi-handle").first
    handle.focus()
    start = time.perf_counter()
    handle.press(key)
    wait_new_plot(page, css, old)
    return time.perf_counter() - start


def type_readout(page, css: str, label: str, value: str) -> None:
    """Type a value into the slider's editable readout (how a learner jumps to a value)."""
    readout = slider(page, css, label).locator(".widget-readout").first
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(value)
    page.keyboard.press("Enter")


def readout(page, css: str, label: str) -> str:
    return slider(page, css, label).locator(".widget-readout").first.inner_text().strip()


def assert_no_widget_errors(page) -> None:
    body = page.inner_text("body")
    for text in WIDGET_ERRORS:
        assert text not in body, f"the page shows {text!r}"


def report_latency(where: str, latencies: list[float]) -> None:
    ms = [1000 * t for t in latencies]
    line = (f"{where}: slider step -> new plot, {len(ms)} steps: median {statistics.median(ms):.0f} ms, "
            f"min {min(ms):.0f} ms, max {max(ms):.0f} ms")
    print("\n" + line)
    OUT.mkdir(exist_ok=True)
    with open(OUT / "latency.txt", "a") as f:
        f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + line + "\n")


def save_dashboard_screenshot(page, css: str, name: str) -> Path:
    """Screenshot of the dashboard; the Voila one becomes the README picture with MOE_LAB_SCREENSHOT=1."""
    OUT.mkdir(exist_ok=True)
    path = OUT / name
    box = dashboard(page, css)
    box.scroll_into_view_if_needed()
    # crop to the controls and the plot (the dashboard box itself spans the whole page width)
    parts = [box.locator(".widget-hbox").first.bounding_box(), box.locator(".widget-output img").last.bounding_box()]
    x0, y0 = min(p["x"] for p in parts), min(p["y"] for p in parts)
    x1, y1 = max(p["x"] + p["width"] for p in parts), max(p["y"] + p["height"] for p in parts)
    page.screenshot(path=str(path), clip={"x": x0, "y": y0, "width": x1 - x0 + 8, "height": y1 - y0 + 8})
    if os.environ.get("MOE_LAB_SCREENSHOT") == "1" and name.startswith("voila"):
        dest = ROOT / "docs" / "img" / "dashboard.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest)
        print(f"\ncopied {path.name} to {dest.relative_to(ROOT)}")
    return path


def exercise_routing_dashboard(page, where: str, screenshot: str) -> None:
    """Move two sliders, a dropdown and the experts/top-k pair; check each produces a new plot."""
    css = "moe-routing-dashboard"
    dashboard(page, css).scroll_into_view_if_needed()
    first = plot_src(page, css)
    latencies = [step_slider(page, css, "input skew") for _ in range(4)]
    assert readout(page, css, "input skew") == "2.00"  # 1.00 + 4 steps of 0.25
    latencies += [step_slider(page, css, "capacity factor", "ArrowLeft") for _ in range(2)]
    assert readout(page, css, "capacity factor") == "0.75"
    assert plot_src(page, css) != first
    # balancing method: a dropdown
    old = plot_src(page, css)
    dashboard(page, css).locator("select").first.select_option(label="bias (DeepSeek-V3)")
    wait_new_plot(page, css, old)
    save_dashboard_screenshot(page, css, screenshot)  # skew 2, capacity factor 0.75, bias balancing
    # fewer experts than top-k: top-k follows the number of experts down, the plot still redraws
    old = plot_src(page, css)
    type_readout(page, css, "experts E", "2")
    expect(slider(page, css, "experts E").locator(".widget-readout")).to_have_text("2", timeout=30_000)
    expect(slider(page, css, "top-k").locator(".widget-readout")).to_have_text("2", timeout=30_000)
    wait_new_plot(page, css, old)
    report_latency(where, latencies)
    assert_no_widget_errors(page)


# ----------------------------------------------------------------------------- JupyterLab

RUN_ALL = """async () => {
    const app = window.jupyterapp;
    const nb = app.shell.currentWidget;
    await nb.context.ready;
    await nb.sessionContext.ready;
    app.shell.collapseLeft();  // more room for the notebook in the screenshots
    await app.commands.execute('notebook:clear-all-cell-outputs');
    await app.commands.execute('notebook:run-all-cells');
}"""

# every code cell has run (a count) and the kernel is idle; returns the cells that stored an error
FINISHED = """() => {
    const nb = window.jupyterapp.shell.currentWidget;
    const cells = nb.content.model.cells;
    const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
    let errors = [];
    for (let i = 0; i < cells.length; i++) {
        const c = cells.get(i);
        if (c.type !== 'code' || c.sharedModel.getSource().trim() === '') continue;
        if (c.executionCount === null) return false;
        const outs = c.outputs.toJSON();
        for (const o of outs) if (o.output_type === 'error') errors.push(`cell ${i}: ${o.ename}: ${o.evalue}`);
    }
    if (!kernel || kernel.status !== 'idle') return false;
    return {errors: errors};
}"""


def test_notebook_04_in_jupyterlab(lab, page):
    nb = json.loads((ROOT / "notebooks" / NB04).read_text())
    n_cells = len(nb["cells"])
    start = time.perf_counter()
    page.goto(f"{lab['url']}/lab/tree/{NB04}?token={TOKEN}", timeout=90_000)
    # JupyterLab first shows a placeholder notebook with one empty cell: wait for the real one
    page.wait_for_function("(n) => window.jupyterapp && window.jupyterapp.shell.currentWidget && "
                           "window.jupyterapp.shell.currentWidget.content && "
                           "window.jupyterapp.shell.currentWidget.content.model && "
                           "window.jupyterapp.shell.currentWidget.content.model.cells.length >= n",
                           arg=n_cells, timeout=90_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
    opened = time.perf_counter() - start
    page.evaluate(RUN_ALL)
    result = page.wait_for_function(FINISHED, timeout=300_000, polling=500).json_value()
    ran = time.perf_counter() - start - opened
    print(f"\nJupyterLab: notebook open + kernel idle {opened:.1f} s, Run All {ran:.1f} s")
    assert result["errors"] == [], f"cells raised: {result['errors']}"
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / "lab_nb04_after_run.png"))
    exercise_routing_dashboard(page, "JupyterLab, routing dashboard", "lab_routing_dashboard.png")
    # the trained-model dashboard: the layer slider redraws its plot
    css = "moe-model-dashboard"
    dashboard(page, css).scroll_into_view_if_needed()
    old = plot_src(page, css)
    layer = slider(page, css, "layer").locator(".noUi-handle").first
    layer.focus()
    layer.press("ArrowLeft")
    wait_new_plot(page, css, old)
    old = plot_src(page, css)
    dashboard(page, css).locator("select").nth(1).select_option(label="expert 0")
    wait_new_plot(page, css, old)
    dashboard(page, css).screenshot(path=str(OUT / "lab_model_dashboard.png"))
    assert_no_widget_errors(page)
    page.screenshot(path=str(OUT / "lab_nb04.png"), full_page=True)
    errors = [m for m in page.console_messages if m.startswith("error") and "widget" in m.lower()]
    assert errors == [], errors


# ----------------------------------------------------------------------------- Voila


def test_expert_load_app_in_voila(voila, page):
    start = time.perf_counter()
    page.goto(voila["url"] + "/", timeout=180_000)
    page.wait_for_selector(".moe-routing-dashboard .widget-output img", timeout=180_000)
    print(f"\nVoila: page with the dashboard after {time.perf_counter() - start:.1f} s")
    page.wait_for_selector(".moe-model-dashboard .widget-output img", timeout=180_000)
    exercise_routing_dashboard(page, "Voila, routing dashboard", "voila_routing_dashboard.png")
    css = "moe-model-dashboard"
    dashboard(page, css).scroll_into_view_if_needed()
    old = plot_src(page, css)
    dashboard(page, css).locator("select").first.select_option(label="Chinese")
    wait_new_plot(page, css, old)
    assert_no_widget_errors(page)
    assert "Traceback" not in page.inner_text("body")
    page.screenshot(path=str(OUT / "voila_app.png"), full_page=True)
