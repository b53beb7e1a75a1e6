"""Headless Chromium against ComfyUI's real frontend, driven over the DevTools protocol.

Why: the UI is the product's front door; a workflow JSON that the server runs may still fail to load
in the page (missing node types, renamed inputs). This helper loads a page, evaluates JavaScript in
it (``app.loadGraphData``, ``app.graph``), and takes screenshots, using only Debian's ``chromium``
and the ``websocket-client`` package (no Selenium/Playwright downloads).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
)


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary, or None (``scripts/install_test_system_deps.sh`` installs one)."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot_cli(
    url: str, out_png: Path, *, width: int = 1400, height: int = 900, budget_ms: int = 15000
) -> Path:
    """One-shot ``chromium --screenshot`` of ``url`` (no scripting); returns the PNG path."""
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("chromium not found; run scripts/install_test_system_deps.sh")
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        cmd = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={out_png}",
            f"--window-size={width},{height}",
            f"--virtual-time-budget={budget_ms}",
            url,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or not out_png.is_file():
        raise RuntimeError(f"chromium --screenshot failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return out_png


class CDPError(RuntimeError):
    """A DevTools call failed or JavaScript threw."""


class Browser:
    """A headless Chromium with one page, controlled through the DevTools websocket."""

    def __init__(self, width: int = 1400, height: int = 900):
        self.width, self.height = width, height
        self.proc: subprocess.Popen[bytes] | None = None
        self.ws: Any = None
        self._profile = tempfile.mkdtemp(prefix="chromium-cdp-")
        self._next_id = 0
        self.console: list[str] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 60) -> Browser:
        import requests
        import websocket

        chromium = find_chromium()
        if chromium is None:
            raise RuntimeError("chromium not found; run scripts/install_test_system_deps.sh")
        cmd = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={self._profile}",
            f"--window-size={self.width},{self.height}",
            "--remote-debugging-port=0",  # Chromium picks a port and writes it to DevToolsActivePort
            "--remote-allow-origins=*",
            "about:blank",
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not port_file.is_file():
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            time.sleep(0.1)
        time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        pages = []
        while time.monotonic() < deadline and not pages:
            targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
            pages = [t for t in targets if t.get("type") == "page"]
            if not pages:
                time.sleep(0.1)
        if not pages:
            raise RuntimeError("chromium has no page target")
        self.ws = websocket.create_connection(
            pages[0]["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True
        )
        self.call("Runtime.enable")
        self.call("Page.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
        )
        return self

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.ws.close()
            finally:
                self.ws = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ protocol
    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 60) -> dict[str, Any]:
        """Send one DevTools command and wait for its reply (events in between are kept in ``console``)."""
        self._next_id += 1
        msg_id = self._next_id
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise CDPError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if msg.get("method") == "Runtime.consoleAPICalled":
                args = msg["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif msg.get("method") == "Runtime.exceptionThrown":
                self.console.append("exception: " + str(msg["params"]["exceptionDetails"].get("text")))
        raise TimeoutError(f"no reply to {method} within {timeout} s")

    def evaluate(self, expression: str, timeout: float = 60) -> Any:
        """Evaluate JavaScript in the page (promises awaited) and return its JSON value."""
        res = self.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            timeout=timeout,
        )
        if "exceptionDetails" in res:
            det = res["exceptionDetails"]
            text = det.get("exception", {}).get("description") or det.get("text")
            raise CDPError(f"JavaScript error: {text}")
        return res.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60, interval: float = 0.25) -> Any:
        """Poll a JavaScript expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        last_err: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
                if value:
                    return value
            except CDPError as e:
                last_err = e
            time.sleep(interval)
        raise TimeoutError(f"timed out waiting for {expression!r} (last error: {last_err})")

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


# ---------------------------------------------------------------------- ComfyUI page helpers

# The frontend exposes its app object as window.app (legacy) and window.comfyAPI.app.app.
_APP = "(window.comfyAPI?.app?.app ?? window.app)"


def open_comfyui(browser: Browser, url: str, timeout: float = 90) -> None:
    """Load the ComfyUI page and wait until the app has a graph and node definitions."""
    browser.navigate(url)
    browser.wait_for(
        f"(() => {{ const a = {_APP}; return !!(a && a.graph && window.LiteGraph"
        " && Object.keys(window.LiteGraph.registered_node_types || {}).length > 50); })()",
        timeout=timeout,
    )


def registered_node_types(browser: Browser) -> list[str]:
    return browser.evaluate("Object.keys(window.LiteGraph.registered_node_types)")


_READ_GRAPH = """(() => {{
    const app = {app};
    const nodes = app.graph.nodes.map(n => ({{
        id: Number(n.id), type: n.type, title: n.title,
        widgets: (n.widgets || []).map(w => [w.name, w.value]),
        inputs: (n.inputs || []).map(i => [i.name, i.type, i.link]),
        outputs: (n.outputs || []).map(o => [o.name, o.type]),
    }}));
    const links = Object.keys(app.graph.links ?? {{}}).length || (app.graph.links?.size ?? 0);
    return {{nodes, links}};
}})()"""


def _holds(browser: Browser, node_ids: list[int], settle_s: float, interval: float = 0.1) -> bool:
    """True when the page's graph has exactly ``node_ids`` on every poll for ``settle_s`` seconds."""
    # ids are numbers in frontend 1.32 and strings in 1.49: compare them as numbers
    check = f"JSON.stringify({_APP}.graph.nodes.map(n => Number(n.id)).sort((a, b) => a - b))"
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        if json.loads(browser.evaluate(check)) != node_ids:
            return False
        time.sleep(interval)
    return True


def load_ui_workflow(browser: Browser, workflow: dict[str, Any], timeout: float = 60,
                     settle_s: float = 1.5) -> dict[str, Any]:
    """``app.loadGraphData(workflow)`` in the page; return what the page then holds.

    Result: ``{"missing": [types not registered in the page], "nodes": [{"id" (a number), "type",
    "widgets"}], "links": n}``. ``missing`` is what ComfyUI's "missing nodes" dialog would list.

    Newer frontends load their start-up graph (the last workflow, a template) asynchronously after
    the app is usable, which can replace a workflow loaded too early: the graph must still hold this
    workflow's nodes ``settle_s`` later, else it is loaded again (until ``timeout``).
    """
    js = f"""(async () => {{
        const app = {_APP};
        const wf = {json.dumps(workflow)};
        const registered = window.LiteGraph.registered_node_types;
        const missing = [...new Set(wf.nodes.map(n => n.type))].filter(t => !(t in registered));
        await app.loadGraphData(wf, true, true, null, {{showMissingNodesDialog: false, showMissingModelsDialog: false}});
        return missing;
    }})()"""
    node_ids = sorted(int(n["id"]) for n in workflow["nodes"])
    deadline = time.monotonic() + timeout
    while True:
        missing = browser.evaluate(js)
        if _holds(browser, node_ids, settle_s):
            return {"missing": missing, **browser.evaluate(_READ_GRAPH.format(app=_APP))}
        if time.monotonic() > deadline:
            raise TimeoutError(f"the page kept replacing the loaded workflow (nodes {node_ids}) for {timeout:.0f} s")


def api_to_ui_workflow(browser: Browser, api_workflow: dict[str, Any]) -> dict[str, Any]:
    """Convert an API-format workflow to the UI format the way the frontend does (``loadApiJson``
    then ``graph.serialize()``): handy for writing ``workflows/*.json`` from tested API prompts."""
    js = f"""(async () => {{
        const app = {_APP};
        await app.loadApiJson({json.dumps(api_workflow)}, "workflow.json");
        return app.graph.serialize();
    }})()"""
    return browser.evaluate(js)


def default_artifacts_dir() -> Path:
    """``test-artifacts/`` at the repo root (gitignored), or ``$MAGICINFINITE_TEST_ARTIFACTS``."""
    env = os.environ.get("MAGICINFINITE_TEST_ARTIFACTS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "test-artifacts"
