"""The page in a real browser: Debian's Chromium, headless, driven by Playwright, against a real
show (``run_show`` with the test scene, OSC and the web server on free loopback ports).

Latency both ways is measured in the browser with the page's own clock
(``performance.timeOrigin + now()``, the system clock) against the test's ``time.time()``.
"""

from __future__ import annotations

import json
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from live.app import ShowOptions, run_show
from live.control.params import Registry
from tests.test_osc import Controller

CHROMIUM = Path("/usr/bin/chromium")
PHONE = (390, 844)
LAPTOP = (1366, 850)
LATENCY_TARGET_MS = 100.0


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Show:
    registry: Registry
    url: str
    osc_port: int
    presets: Path
    report: list

    def osc(self) -> Controller:
        return Controller(("127.0.0.1", self.osc_port))


@pytest.fixture(scope="module")
def show(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Show]:
    presets = tmp_path_factory.mktemp("presets")
    registry = Registry()
    registry.update({"width": 96, "height": 64, "steps": 1, "fps_cap": 12}, "test")
    web_port, osc_port = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    opts = ShowOptions(source="test-scene", window=False, weights=str(checkpoint), web_port=web_port,
                       osc_port=osc_port, midi=False, mdns=False, presets_dir=presets, status_every=3600,
                       output_size=(800, 400))  # wider than the preview's 640 px; the dream is 96x64
    stop = threading.Event()
    report: list = []
    thread = threading.Thread(target=lambda: report.append(run_show(opts, registry, stop)), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{web_port}/"
    deadline = time.monotonic() + 120
    while True:  # until the loop runs: the page's status says so
        try:
            with urllib.request.urlopen(url + "api/status", timeout=5) as r:
                if json.load(r).get("state") == "dreaming":
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline and thread.is_alive(), "the show did not start"
        time.sleep(0.2)
    yield Show(registry, url, osc_port, presets, report)
    stop.set()
    thread.join(60)
    assert report and report[0].frames > 0


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (make test installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory(prefix="ddl-chromium-") as profile:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, accept_downloads=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        yield context
        context.close()


def _open(browser, show: Show, size: tuple[int, int] = LAPTOP):
    page = browser.new_page()
    page.set_viewport_size({"width": size[0], "height": size[1]})
    page.goto(show.url)
    page.wait_for_selector("#params .param", timeout=30_000)
    page.wait_for_selector(".connection.live", timeout=30_000)
    return page


def _wait(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.01)


def test_faders_drive_the_show_and_the_show_drives_the_page_within_100_ms(browser, show: Show) -> None:
    show.registry.set("steps", 2, "osc")
    page = _open(browser, show)
    assert page.input_value("#p-steps") == "2"  # it opens on the show's values, not defaults
    osc = show.osc()
    arrived: list[tuple[float, object]] = []
    show.registry.subscribe(lambda name, value, source: arrived.append((time.time(), value))
                            if name == "jitter" and source == "web" else None)
    page.evaluate("""() => { window.seen = [];
        document.addEventListener('ddl:value', e => window.seen.push(
            [e.detail.name, e.detail.value, performance.timeOrigin + performance.now()])); }""")
    to_show, to_page = [], []
    try:
        for i, position in enumerate((100, 900, 250, 750, 400, 600, 50, 950, 300, 700)):
            arrived.clear()
            started = page.evaluate("""(v) => { const f = document.getElementById('p-jitter-fader');
                f.value = v; const t = performance.timeOrigin + performance.now();
                f.dispatchEvent(new Event('input', {bubbles: true})); return t; }""", position)
            expected = round(64 * position / 1000)
            _wait(lambda want=expected: any(v == want for _, v in arrived), what=f"jitter {expected} from the page")
            to_show.append(next(t for t, v in arrived if v == expected) * 1e3 - started)
            assert osc.value("jitter") == expected  # the show's value, asked over OSC

            value = round(0.05 + 0.09 * i, 2)
            sent = time.time() * 1e3
            osc.send("/dream/feedback", value)
            # OSC floats are 32-bit: the show stores 0.05 as 0.0500000007
            match = "s => s[0] === 'feedback' && Math.abs(s[1] - v) < 1e-6"
            page.wait_for_function(f"(v) => window.seen.some({match})", arg=value, timeout=30_000)
            shown = page.evaluate(f"(v) => window.seen.find({match})[2]", value)
            to_page.append(shown - sent)
            assert float(page.input_value("#p-feedback")) == pytest.approx(value)
    finally:
        osc.close()
    print(f"\npage -> show ms: {[round(x, 1) for x in to_show]}\nshow -> page ms: {[round(x, 1) for x in to_page]}")
    assert statistics.median(to_show) <= LATENCY_TARGET_MS, to_show
    assert statistics.median(to_page) <= LATENCY_TARGET_MS, to_page
    page.close()


def test_the_preview_changes_from_frame_to_frame(browser, show: Show) -> None:
    page = _open(browser, show)
    page.wait_for_function("() => document.getElementById('preview').src.startsWith('blob:')", timeout=30_000)
    fingerprint = """async () => { const img = document.getElementById('preview');
        if (!img.complete || !img.naturalWidth) await new Promise(r => img.addEventListener('load', r, {once: true}));
        const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
        const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        return [img.src, Array.from(g.getImageData(0, 0, c.width, c.height).data.filter((_, i) => i % 97 == 0))]; }"""
    first_src, first = page.evaluate(fingerprint)
    # The test scene moves: so does the preview. Until the first frame is dreamed (seconds on a busy
    # machine) the page gets the same "loading" placeholder again and again: wait for a change.
    src, second, deadline = first_src, first, time.monotonic() + 120
    while second == first and time.monotonic() < deadline:
        page.wait_for_function("(s) => document.getElementById('preview').src !== s", arg=src, timeout=30_000)
        src, second = page.evaluate(fingerprint)
    assert len(first) == len(second) and first != second, "the preview never changed"
    size = page.evaluate("[document.getElementById('preview').naturalWidth, document.getElementById('preview').naturalHeight]")
    assert size == [640, 320]  # the 800x400 output, shrunk to the preview's 640 px
    page.close()


def test_presets_save_and_load_with_errors_on_the_page(browser, show: Show) -> None:
    page = _open(browser, show)
    show.registry.set("jitter", 7, "osc")
    page.wait_for_function("() => document.getElementById('p-jitter').value === '7'")
    page.fill("#preset-name", "calm look")  # a space: refused, and the page says why
    page.click("#preset-save-form button[type=submit]")
    page.wait_for_function("() => document.getElementById('preset-message').classList.contains('bad')")
    assert "use letters, digits" in page.text_content("#preset-message")
    page.fill("#preset-name", "../calm")
    page.click("#preset-save-form button[type=submit]")
    page.wait_for_function("() => document.getElementById('preset-message').textContent.includes('../calm')")
    assert "no paths" in page.text_content("#preset-message")
    page.fill("#preset-name", "calm")
    page.click("#preset-save-form button[type=submit]")
    page.wait_for_function("() => document.getElementById('preset-message').textContent === 'preset calm saved'")
    assert (show.presets / "calm.toml").is_file() and not list(show.presets.parent.glob("calm*"))
    page.wait_for_function("() => [...document.getElementById('preset-list').options].some(o => o.value === 'calm')")

    show.registry.set("jitter", 30, "osc")
    page.wait_for_function("() => document.getElementById('p-jitter').value === '30'")
    page.select_option("#preset-list", "calm")
    page.click("#preset-load")
    page.wait_for_function("() => document.getElementById('p-jitter').value === '7'")
    assert show.registry.get("jitter") == 7
    page.close()


def test_a_value_out_of_range_is_refused_and_the_page_says_why(browser, show: Show) -> None:
    page = _open(browser, show)
    before = show.registry.get("steps")
    page.fill("#p-steps", "99")
    page.press("#p-steps", "Enter")
    page.wait_for_selector(".param[data-param=steps] .error", timeout=30_000)
    assert "0..50" in page.text_content(".param[data-param=steps] .error")
    assert show.registry.get("steps") == before
    page.close()


LABELS = """() => {
    const name = (el) => (el.labels && el.labels.length ? [...el.labels].map(l => l.textContent).join(' ') : '')
        || el.getAttribute('aria-label') || (el.tagName !== 'INPUT' ? el.textContent : '') || el.title || '';
    const controls = [...document.querySelectorAll('input, select, button, a.button')];
    return {
        count: controls.length,
        unlabelled: controls.filter(el => !name(el).trim()).map(el => el.outerHTML.slice(0, 80)),
        overflowing: controls.filter(el => { const r = el.getBoundingClientRect();
            return r.width > 0 && (r.left < 0 || r.right > window.innerWidth + 0.5); }).map(el => el.id),
        scroll: [document.documentElement.scrollWidth, window.innerWidth],
    };
}"""


@pytest.mark.parametrize("size", [PHONE, LAPTOP], ids=["phone", "laptop"])
def test_phone_and_laptop_fit_and_every_control_is_labelled(browser, show: Show, size, tmp_path: Path) -> None:
    page = _open(browser, show, size)
    shot = tmp_path / f"page-{size[0]}x{size[1]}.png"
    page.screenshot(path=str(shot), full_page=True)
    picture = cv2.imread(str(shot))
    assert picture is not None and picture.shape[1] == size[0]  # nothing wider than the viewport
    found = page.evaluate(LABELS)
    assert found["scroll"][0] <= found["scroll"][1], f"horizontal overflow at {size}: {found['scroll']}"
    assert not found["overflowing"], found["overflowing"]
    assert not found["unlabelled"], found["unlabelled"]
    for name, param in show.registry.params.items():
        if param.kind != "objective":
            assert page.locator(f"#p-{name}").count() == 1, f"no control for {name}"
    options = page.eval_on_selector_all("#layer option", "os => os.map(o => o.value)")
    assert options[0] == "conv1" and "inception4c" in options and len(options) == 12
    page.close()


def test_screenshot_download(browser, show: Show, tmp_path: Path) -> None:
    page = _open(browser, show)
    with page.expect_download(timeout=30_000) as download:
        page.click("#screenshot")
    target = tmp_path / download.value.suggested_filename
    download.value.save_as(str(target))
    assert target.name.startswith("deepdream-") and target.suffix == ".png"
    picture = cv2.imread(str(target))
    assert picture is not None and picture.shape == (400, 800, 3) and np.ptp(picture) > 0  # the output, full size
    page.close()
