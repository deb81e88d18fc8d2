"""The Gantt page in a real browser: headless Chromium, offline, driven through the Chrome
DevTools Protocol (CDP).

Charts come from ``tgpipe simulate --gantt`` (real simulated traces). Chromium is started with
``--remote-debugging-pipe``: CDP's JSON messages, each ended by a NUL byte, go through two
pipes (the browser reads fd 3 and writes fd 4), so there is no port to pick or share with
other jobs, no websocket, and no network socket at all. Each page is checked for: no console
errors or exceptions; no request to anything but the file itself; the plotly graph holding
one bar per trace row; bars painted in the op colours (pixels of a screenshot of the plot
area, decoded by the browser itself); a hover label with the bar's name and duration when the
mouse sits on it; and a 1,000-batch, 8-rank chart ready within seconds.

Skipped only where no Chromium is installed (CI installs Debian's ``chromium``).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tgpipe.gantt import OP_COLOURS
from tgpipe.trace import Trace

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)",
)

#: Flags for a quiet, offline, throw-away browser. Without the background-networking ones
#: Chromium dials out at start (and a closed network refuses it). SwiftShader draws WebGL on
#: the CPU; its automatic fallback is deprecated, so it is asked for (the page is ours).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
)
WIDTH, HEIGHT = 1400, 1000
LOAD_LIMIT_S = 10.0  #: the 1,000-batch, 8-rank chart must be drawn within this


class Browser:
    """Headless Chromium and a synchronous CDP client over its debugging pipe: `call` sends
    a command and returns its result; events that arrive meanwhile are kept in `events`."""

    def __init__(self, exe: str, profile: str):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_fds():  # in the child: the pipes as fd 3 (read) and fd 4 (write)
            a = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=wire_fds,
            close_fds=False,  # our other descriptors are not inheritable anyway (PEP 446)
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._id = 0
        self.events: list[dict] = []

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_browser], [], [], max(left, 0))
            if not ready:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                self._log.seek(0)
                tail = self._log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"Chromium closed its debugging pipe; its log ends:\n{tail}")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None, *,
             timeout: float = 30.0) -> dict:  # fmt: skip
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
            self.events.append(answer)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._log.close()


class Page:
    """One tab, attached on its own CDP session, with the page's problems collected."""

    def __init__(self, browser: Browser, path: Path):
        self.browser = browser
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.call(f"{domain}.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )
        start = time.monotonic()
        self.call("Page.navigate", {"url": path.resolve().as_uri()})
        self.wait_for(
            "(() => { const gd = document.querySelector('.js-plotly-plot');"
            " return !!(gd && gd._fullLayout && gd._fullLayout._glcanvas"
            " && gd.querySelector('.ytick')); })()"
        )
        # two animation frames: the frame with the bars has been painted
        self.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        self.load_seconds = time.monotonic() - start
        #: the same, as the page counts it: from the start of its navigation
        self.page_seconds = self.evaluate("performance.now()") / 1e3

    def call(self, method: str, params: dict | None = None, **kw) -> dict:
        return self.browser.call(method, params, self.session, **kw)

    def evaluate(self, expression: str, timeout: float = 30.0):
        """The value of a JavaScript expression (awaited if a promise)."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.02)
        raise TimeoutError(f"never true: {expression}")

    def _events(self, *methods: str) -> list[dict]:
        return [
            e["params"]
            for e in self.browser.events
            if e.get("sessionId") == self.session and e.get("method") in methods
        ]

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors of this page."""
        found = []
        for p in self._events("Runtime.consoleAPICalled"):
            if p["type"] in ("error", "assert"):
                found.append("console: " + " ".join(str(a.get("value")) for a in p["args"]))
        for p in self._events("Runtime.exceptionThrown"):
            details = p["exceptionDetails"]
            found.append("exception: " + details.get("exception", {}).get("description", ""))
        for p in self._events("Log.entryAdded"):
            if p["entry"]["level"] == "error":
                found.append("log: " + p["entry"]["text"])
        return found

    def requests(self) -> list[str]:
        return [p["request"]["url"] for p in self._events("Network.requestWillBeSent")]


@pytest.fixture(scope="module")
def charts(tmp_path_factory) -> dict[str, Path]:
    """A small PipeTGL chart with its trace, and the 1,000-batch, 8-rank one."""
    folder = tmp_path_factory.mktemp("charts")
    runs = {
        "small": ["--gpus", "4", "--batches", "40"],
        "big": ["--gpus", "8", "--batches", "1000"],
    }
    for name, args in runs.items():
        r = subprocess.run(
            [sys.executable, "-m", "tgpipe", "simulate", *args]
            + ["--gantt", str(folder / f"{name}.html"), "--trace", str(folder / f"{name}.json")],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
    return {
        f"{name}_{kind}": folder / f"{name}.{kind}" for name in runs for kind in ("html", "json")
    }


@pytest.fixture(scope="module")
def browser():
    with tempfile.TemporaryDirectory(prefix="tgpipe-chromium-") as profile:
        b = Browser(CHROMIUM, profile)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def small(browser, charts) -> Page:
    return Page(browser, charts["small_html"])


def _assert_clean_and_offline(page: Page) -> None:
    assert page.errors() == []
    requests = page.requests()
    assert requests and all(url.startswith(("file:", "data:", "about:")) for url in requests), (
        requests
    )


def test_no_errors_and_no_network(small):
    _assert_clean_and_offline(small)


def test_graph_holds_one_bar_per_trace_row(small, charts):
    trace = Trace.load(charts["small_json"])
    per_op: dict[str, int] = {}
    for row in trace.rows:
        per_op[row.op] = per_op.get(row.op, 0) + 1
    drawn = small.evaluate(
        "document.querySelector('.js-plotly-plot')._fullData"
        ".map(t => [t.name, t.mode, t.type, t.x.length])"
    )
    markers = {name: n for name, mode, _, n in drawn if mode == "markers"}
    lines = {name: n for name, mode, _, n in drawn if mode == "lines"}
    assert {kind for _, _, kind, _ in drawn} == {"scattergl"}
    assert {op: markers[op] for op in per_op} == per_op  # one hover point per bar
    assert {op: lines[op] for op in per_op} == {op: 3 * n for op, n in per_op.items()}
    assert set(markers) == set(per_op) | {"GPU bubble"}


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[k : k + 2], 16) for k in (1, 3, 5))


#: Counts the pixels of a PNG (base64) near each colour, decoded by the browser's own image
#: decoder on a detached canvas: no image library needed on the Python side.
_COUNT_COLOURS = """
(async (png, colours) => {
  const img = new Image();
  img.src = 'data:image/png;base64,' + png;
  await img.decode();
  const canvas = document.createElement('canvas');
  canvas.width = img.width; canvas.height = img.height;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, img.width, img.height).data;
  const counts = Object.fromEntries(Object.keys(colours).map(k => [k, 0]));
  let white = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i] > 250 && d[i + 1] > 250 && d[i + 2] > 250) { white++; continue; }
    for (const [name, [r, g, b]] of Object.entries(colours)) {
      if (Math.abs(d[i] - r) <= 3 && Math.abs(d[i + 1] - g) <= 3 && Math.abs(d[i + 2] - b) <= 3) {
        counts[name]++; break;
      }
    }
  }
  return {counts, white, total: d.length / 4};
})
"""


def test_bars_are_painted_in_their_op_colours(small, charts):
    trace = Trace.load(charts["small_json"])
    area = small.evaluate(
        "(() => { const l = document.querySelector('.js-plotly-plot')._fullLayout;"
        " return {x: l.xaxis._offset, y: l.yaxis._offset, width: l.xaxis._length,"
        " height: l.yaxis._length}; })()"
    )
    shot = small.call("Page.captureScreenshot", {"format": "png", "clip": {**area, "scale": 1}})[
        "data"
    ]
    assert base64.b64decode(shot)[:8] == b"\x89PNG\r\n\x1a\n"
    ops = sorted({r.op for r in trace.rows})
    colours = {op: _rgb(OP_COLOURS[op]) for op in ops}
    found = small.evaluate(f"{_COUNT_COLOURS}({json.dumps(shot)}, {json.dumps(colours)})")
    print(f"plot area {area['width']}x{area['height']} px, pixels per op: {found['counts']}")
    assert found["white"] < found["total"]  # the WebGL canvas is not blank
    for op in ops:  # every op's bars show: 40 bars of >= 12 px height, a few px wide at least
        assert found["counts"][op] > 200, (op, found["counts"])


def test_hover_on_a_bar_shows_its_name_and_duration(small, charts):
    trace = Trace.load(charts["small_json"])
    bar = next(r for r in trace.rows if r.op == "FWD" and r.batch == 17)
    where = small.evaluate(
        "(() => { const l = document.querySelector('.js-plotly-plot')._fullLayout;"
        f" const row = l.yaxis.ticktext.indexOf('r{bar.rank} gpu');"
        f" return {{x: l.xaxis._offset + l.xaxis.l2p({(bar.start + bar.end) / 2 * 1e3}),"
        " y: l.yaxis._offset + l.yaxis.l2p(row), row}; })()"
    )
    assert where["row"] >= 0
    small.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": where["x"], "y": where["y"]})
    text = small.wait_for(
        "(() => { const h = document.querySelector('.hoverlayer .hovertext');"
        " return h ? h.textContent : ''; })()",
        timeout=10,
    )
    print(f"hover at ({where['x']:.0f}, {where['y']:.0f}) px: {text!r}")
    assert f"FWD{bar.batch}" in text and f"rank {bar.rank}" in text
    assert f"duration {bar.duration * 1e3:.3f} ms" in text
    assert f"start {bar.start * 1e3:.3f} ms" in text
    _assert_clean_and_offline(small)


def test_1000_batches_on_8_ranks_load_in_seconds(browser, charts):
    size = charts["big_html"].stat().st_size / 2**20
    page = Page(browser, charts["big_html"])
    drawn = page.evaluate(
        "(() => { const gd = document.querySelector('.js-plotly-plot');"
        " return [gd._fullData.filter(t => t.mode === 'markers' && t.name !== 'GPU bubble')"
        ".reduce((n, t) => n + t.x.length, 0), gd._fullLayout.yaxis.ticktext.length]; })()"
    )
    print(
        f"1,000 batches x 8 ranks ({size:.1f} MiB): drawn {page.load_seconds:.2f} s after "
        f"the navigation was asked for ({page.page_seconds:.2f} s by the page's own clock)"
    )
    assert drawn[0] == len(Trace.load(charts["big_json"]).rows) == 9000
    assert drawn[1] >= 8
    _assert_clean_and_offline(page)
    assert page.load_seconds < LOAD_LIMIT_S
