"""Real-browser tests: notebook 05 in JupyterLab and the Voila expert-load app, driven by Playwright.

Headless Debian Chromium (``/usr/bin/chromium``, installed by ``make browser``) drives a JupyterLab
and a Voila server started here on 127.0.0.1 (token, free port, isolated settings/workspace/runtime
folders, copies of the notebooks so the repository is never modified). The tests run the notebook,
move widgets with the keyboard like a learner, type a text and answers, and check that the plot image
changes and that no widget fails to display. Screenshots go to ``test-output/``; with
``MOE_LAB_SCREENSHOT=1`` the Voila dashboard screenshot is also copied to ``docs/img/dashboard.png``
(the README picture). A third test starts Voila with the kernel-culling settings of ``make app``
(shorter timeouts) and checks that the kernel of a closed page is culled while an open page keeps its own.

Each slider move -> new plot latency is measured in the page (keydown event to the new image
decoded, on the browser's clock) and split with the kernel's own timestamps (busy -> idle of the
request, read from the kernel websocket frames): printed and appended to ``test-output/latency.txt``,
never asserted (timings are noisy). Servers are stopped by their PID, browsers closed, and any process
left with our runtime folder in its command line is reported and killed, also when a test fails.
"""

from __future__ import annotations

import datetime
import json
import os
import re
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
NB05 = "05_routing_visualization.ipynb"
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
    for nb in (NB05, APP):
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


def processes_mentioning(marker: str) -> list[int]:
    """PIDs of the processes whose command line contains ``marker`` (our kernels' runtime folder)."""
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
    return found


def kill_processes_mentioning(marker: str) -> list[int]:
    """Kill (by PID) the processes whose command line contains ``marker``; returns their PIDs."""
    found = processes_mentioning(marker)
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return found


def make_app_cull_flags() -> list[str]:
    """The kernel-culling options of the ``app:`` target of the Makefile (what ``make app`` runs)."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^app:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe, "the Makefile has no app: target"
    text = recipe.group(1)
    for name in re.findall(r"\$\((\w+)\)", text):  # make variables the recipe uses (VOILA_CULL)
        definition = re.search(rf"^{name}\s*:?=((?:.*\\\n)*.*)$", makefile, re.M)
        text += definition.group(1) if definition else ""
    return re.findall(r"--MappingKernelManager\.cull_\w+=\S+", text)


def voila_command(sandbox: dict, name: str, port: int, flags: list[str]) -> list[str]:
    """Voila on the app; its kernels' connection files (and so their command lines) in our runtime folder
    (Voila puts them in a temporary folder of its own under ``connection_dir_root``, /tmp by default)."""
    runtime = sandbox["base"] / f"runtime-{name}"
    return [sys.executable, "-m", "voila", str(sandbox["work"] / APP), "--no-browser", "--Voila.ip=127.0.0.1",
            f"--port={port}", "--ServerApp.port_retries=0", f"--Voila.connection_dir_root={runtime}", *flags]


def wait_port(server: Server, port: int, timeout: float = 90) -> float:
    """Voila runs the notebook when the page is requested: wait for the port, not for a page."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if server.proc.poll() is not None:
            pytest.fail(f"{server.name} exited with code {server.proc.returncode}:\n{server.log_tail()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return time.perf_counter() - start
        time.sleep(0.2)
    pytest.fail(f"{server.name} did not listen on port {port} within {timeout:.0f} s:\n{server.log_tail()}")


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
    server = Server("voila", voila_command(sandbox, "voila", port, make_app_cull_flags()), sandbox)
    try:
        seconds = wait_port(server, port)
        print(f"\nvoila (pid {server.proc.pid}) listening after {seconds:.1f} s")
        yield {"url": f"http://127.0.0.1:{port}", "server": server}
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
    pg.kernel_frames = []
    pg.on("websocket", lambda ws: ws.on("framereceived", lambda payload: record_frame(pg.kernel_frames, payload)))
    try:
        yield pg
    finally:
        context.close()


# ----------------------------------------------------------------------------- kernel frames


def kernel_message(payload) -> dict | None:
    """Header, parent header and content of a kernel websocket frame (JSON, or the binary v1 protocol
    of jupyter_server: 8-byte count, 8-byte offsets, channel, header, parent, metadata, content, ...)."""
    try:
        if isinstance(payload, str):
            msg = json.loads(payload)
            return {"header": msg.get("header", {}), "parent": msg.get("parent_header", {}),
                    "content": msg.get("content", {}), "channel": msg.get("channel")}
        data = bytes(payload)
        count = int.from_bytes(data[:8], "little")
        offsets = [int.from_bytes(data[8 * (i + 1):8 * (i + 2)], "little") for i in range(count)]
        parts = [data[offsets[i]:offsets[i + 1]] for i in range(count - 1)]
        if len(parts) < 5:
            return None
        return {"channel": parts[0].decode(), "header": json.loads(parts[1]), "parent": json.loads(parts[2]),
                "content": json.loads(parts[4])}
    except (ValueError, UnicodeDecodeError, IndexError):
        return None


def record_frame(frames: list, payload) -> None:
    """Keep the kernel's status messages: when it started (busy) and finished (idle) each request."""
    msg = kernel_message(payload)
    if msg is None or msg["header"].get("msg_type") != "status":
        return
    frames.append({"state": msg["content"].get("execution_state"), "date": msg["header"].get("date"),
                   "request": msg["parent"].get("msg_id"), "request_type": msg["parent"].get("msg_type")})


def kernel_seconds(frames: list) -> float:
    """Kernel time of the widget requests (``comm_msg``) whose busy and idle are both in ``frames``."""
    busy, total = {}, 0.0
    for f in frames:
        if f["request_type"] != "comm_msg" or not f["date"]:
            continue
        t = datetime.datetime.fromisoformat(f["date"].replace("Z", "+00:00"))
        if f["state"] == "busy":
            busy[f["request"]] = t
        elif f["state"] == "idle" and f["request"] in busy:
            total += (t - busy.pop(f["request"])).total_seconds()
    return total


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
            arg=[css, old_src], timeout=timeout, polling="raf")
    except playwright_sync.TimeoutError:
        OUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUT / f"timeout_{css}.png"))
        output = dashboard(page, css).locator(".widget-output").last.inner_text()[:500]
        pytest.fail(f"no new plot in .{css} within {timeout / 1000:.0f} s (screenshot test-output/timeout_{css}.png); "
                    f"output area text: {output!r}")


# In the page: the time of the next keydown (capture phase, before the slider handles it) and the
# time the dashboard's new picture is decoded, both on the page's clock (performance.now()).
ARM_LATENCY = """([css, old]) => {
    const probe = window.__moeLatency = {start: null, end: null};
    document.addEventListener('keydown', (e) => { probe.start = e.timeStamp; }, {capture: true, once: true});
    const root = document.querySelector(`.${css}`);
    const observer = new MutationObserver(() => {
        const imgs = root.querySelectorAll('.widget-output img');
        const img = imgs[imgs.length - 1];
        if (!img || img.src === old || probe.end !== null) return;
        probe.end = -1;
        observer.disconnect();
        img.decode().catch(() => null).then(() => { probe.end = performance.now(); });
    });
    observer.observe(root, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
}"""


def step_slider(page, css: str, label: str, key: str = "ArrowRight") -> tuple[float, float]:
    """Press ``key`` once on the slider ``label``; returns (seconds from the keydown to the new picture
    decoded, kernel seconds spent on the requests of this step)."""
    old = plot_src(page, css)
    handle = slider(page, css, label).locator(".noUi-handle").first
    handle.focus()
    page.evaluate(ARM_LATENCY, [css, old])
    first_frame = len(page.kernel_frames)
    handle.press(key)
    try:
        page.wait_for_function("() => window.__moeLatency.end > 0", timeout=30_000, polling="raf")
    except playwright_sync.TimeoutError:
        wait_new_plot(page, css, old)  # fails with a screenshot and the output text
    probe = page.evaluate("() => window.__moeLatency")
    page.wait_for_timeout(30)  # let the kernel's idle status arrive
    return (probe["end"] - probe["start"]) / 1000, kernel_seconds(page.kernel_frames[first_frame:])


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


def report_latency(where: str, steps: list[tuple[float, float]]) -> None:
    total = [1000 * t for t, _ in steps]
    kernel = [1000 * k for _, k in steps]
    rest = [t - k for t, k in zip(total, kernel, strict=True)]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    line = (f"{where}: slider step -> new picture decoded, {len(total)} steps: "
            f"median {statistics.median(total):.0f} ms "
            f"(min {min(total):.0f}, max {max(total):.0f}); kernel {statistics.median(kernel):.0f} ms, "
            f"transport + browser {statistics.median(rest):.0f} ms (medians); load average {load:.2f} "
            f"on {os.cpu_count()} cores")
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


LATENCY_STEPS = 12  # slider steps measured per dashboard (input skew up and down, then the temperature)


def exercise_routing_dashboard(page, where: str, screenshot: str) -> None:
    """Move sliders, a dropdown and the experts/top-k pair; check each produces a new plot."""
    css = "moe-routing-dashboard"
    dashboard(page, css).scroll_into_view_if_needed()
    first = plot_src(page, css)
    steps = [step_slider(page, css, "input skew") for _ in range(4)]
    assert readout(page, css, "input skew") == "2.00"  # 1.00 + 4 steps of 0.25
    steps += [step_slider(page, css, "input skew", "ArrowLeft") for _ in range(4)]
    steps += [step_slider(page, css, "temperature") for _ in range(LATENCY_STEPS - 8)]
    report_latency(where, steps)
    steps = [step_slider(page, css, "capacity factor", "ArrowLeft") for _ in range(2)]
    assert readout(page, css, "capacity factor") == "0.75"
    assert plot_src(page, css) != first
    # balancing method: a dropdown
    old = plot_src(page, css)
    dashboard(page, css).locator("select").first.select_option(label="bias (DeepSeek-V3)")
    wait_new_plot(page, css, old)
    save_dashboard_screenshot(page, css, screenshot)  # capacity factor 0.75, temperature 2, bias balancing
    # fewer experts than top-k: top-k follows the number of experts down, the plot still redraws
    old = plot_src(page, css)
    type_readout(page, css, "experts E", "2")
    expect(slider(page, css, "experts E").locator(".widget-readout")).to_have_text("2", timeout=30_000)
    expect(slider(page, css, "top-k").locator(".widget-readout")).to_have_text("2", timeout=30_000)
    wait_new_plot(page, css, old)
    assert_no_widget_errors(page)


def exercise_model_dashboard_text(page) -> None:
    """Type a text of one's own in the box, press the route button: a new picture, the menu says so."""
    css = "moe-model-dashboard"
    dashboard(page, css).scroll_into_view_if_needed()
    sample = dashboard(page, css).locator("select").first
    old = plot_src(page, css)
    box = dashboard(page, css).locator("textarea").first
    box.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("print('hi')  # 你好")
    page.keyboard.press("Enter")  # a new line in the box: nothing is routed yet
    page.keyboard.type("12+7=19")
    page.wait_for_timeout(300)
    assert plot_src(page, css) == old, "the plot changed before the text was sent"
    start = time.perf_counter()
    dashboard(page, css).get_by_role("button", name="route text").click()
    wait_new_plot(page, css, old)
    print(f"\nmodel dashboard: 'route text' click -> new picture {1000 * (time.perf_counter() - start):.0f} ms "
          "(a new text: the model runs, the figure is built anew)")
    # the menu names what the plot shows (ipywidgets writes option labels with no-break spaces)
    expect(sample.locator("option:checked")).to_have_text(re.compile(r"your\stext"), timeout=30_000)


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


def test_notebook_05_in_jupyterlab(lab, page):
    nb = json.loads((ROOT / "notebooks" / NB05).read_text())
    n_cells = len(nb["cells"])
    start = time.perf_counter()
    page.goto(f"{lab['url']}/lab/tree/{NB05}?token={TOKEN}", timeout=90_000)
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
    page.screenshot(path=str(OUT / "lab_nb05_after_run.png"))
    exercise_routing_dashboard(page, "JupyterLab, routing dashboard", "lab_routing_dashboard.png")
    # the trained-model dashboard: the layer slider and the expert menu redraw its plot
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
    exercise_model_dashboard_text(page)
    dashboard(page, css).screenshot(path=str(OUT / "lab_model_dashboard.png"))
    assert_no_widget_errors(page)
    page.screenshot(path=str(OUT / "lab_nb05.png"), full_page=True)
    errors = [m for m in page.console_messages if m.startswith("error") and "widget" in m.lower()]
    assert errors == [], errors


# ----------------------------------------------------------------------------- Voila


def answer_exercise(page, index: int, answer: str) -> str:
    """Type ``answer`` in the app's exercise box ``index`` and press Enter; returns the verdict shown."""
    box = page.locator(".moe-exercise").nth(index)
    box.scroll_into_view_if_needed()
    field = box.locator("input[type=text]").first
    verdict = box.locator(".widget-html").last
    before = verdict.inner_text()
    field.fill(answer)
    field.press("Enter")
    expect(verdict).to_contain_text(re.compile("right|not yet"), timeout=30_000)
    expect(verdict).not_to_have_text(before, timeout=30_000)  # the verdict on this answer, not the last one
    return verdict.inner_text()


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
    exercise_model_dashboard_text(page)
    # the exercises are answer boxes: a wrong answer and a right one get the checker's verdict
    assert "not yet" in answer_exercise(page, 1, "none")
    verdict = answer_exercise(page, 1, "aux")
    assert "right" in verdict or "ends higher" in verdict  # the checker's verdict, whichever method wins
    assert "not yet" in answer_exercise(page, 0, "1.0") and "perfect balance" in page.inner_text(".moe-exercise")
    assert_no_widget_errors(page)
    assert "Traceback" not in page.inner_text("body")
    page.screenshot(path=str(OUT / "voila_app.png"), full_page=True)


def kernel_ids(runtime: Path) -> set[str]:
    """Ids of the kernels a server started and has not shut down (their connection files)."""
    return {f.stem.removeprefix("kernel-") for f in runtime.rglob("kernel-*.json")}


def test_voila_culls_the_kernel_of_a_closed_page(sandbox, browser):
    """``make app`` culls idle kernels that no page is connected to (a closed tab whose unload beacon
    never arrived); a page that stays open keeps its kernel. Same options, shorter timeouts."""
    flags = make_app_cull_flags()
    options = dict(f.split("=", 1) for f in flags)
    assert int(options.get("--MappingKernelManager.cull_idle_timeout", "0")) > 0, f"make app does not cull: {flags}"
    assert options.get("--MappingKernelManager.cull_connected", "False") == "False", "open pages would lose kernels"
    timeout, interval = 4, 1
    options["--MappingKernelManager.cull_idle_timeout"] = str(timeout)
    options["--MappingKernelManager.cull_interval"] = str(interval)
    port = free_port()
    flags = [f"{k}={v}" for k, v in options.items()]
    server = Server("voila-cull", voila_command(sandbox, "voila-cull", port, flags), sandbox)
    contexts = []
    try:
        wait_port(server, port)
        pages = []
        for _ in range(2):
            context = browser.new_context(viewport={"width": 1280, "height": 1000})
            context.set_default_timeout(180_000)
            contexts.append(context)
            pg = context.new_page()
            pg.goto(f"http://127.0.0.1:{port}/", timeout=180_000)
            pg.wait_for_selector(".moe-model-dashboard .widget-output img", timeout=180_000)
            pages.append(pg)
        kernels = kernel_ids(server.runtime)
        assert len(kernels) == 2, f"two pages, kernels {kernels}"
        kernel_pids = set(processes_mentioning(str(server.runtime))) - {server.proc.pid}
        # close the first tab without its unload handler (no shutdown beacon): only culling can free it
        pages[0].close(run_before_unload=False)
        contexts[0].close()
        deadline = time.perf_counter() + 10 * (timeout + interval) + 30
        while time.perf_counter() < deadline and len(kernel_ids(server.runtime)) > 1:
            time.sleep(0.5)
        left = kernel_ids(server.runtime)
        culled = kernels - left
        print(f"\nVoila culling: {len(kernels)} kernels ({len(kernel_pids)} processes), "
              f"{len(culled)} culled after the page closed, {len(left)} left for the open page")
        assert len(left) == 1 and len(culled) == 1, f"kernels before {kernels}, after {left}"
        assert "Culling" in server.log_tail(200) and culled.pop() in server.log_tail(200)
        assert len(set(processes_mentioning(str(server.runtime))) - {server.proc.pid}) == len(kernel_pids) - 1
        # the open page still works: its kernel redraws a slider move
        css = "moe-routing-dashboard"
        old = plot_src(pages[1], css)
        handle = slider(pages[1], css, "input skew").locator(".noUi-handle").first
        handle.focus()
        handle.press("ArrowRight")
        wait_new_plot(pages[1], css, old)
    finally:
        for context in contexts:
            try:
                context.close()
            except playwright_sync.Error:
                pass
        server.stop()
