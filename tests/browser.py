"""Open an HTML file in a real headless Chromium and report what a reader would see go wrong.

Playwright drives the system's Chromium (``/usr/bin/chromium``, or ``SEGBENCH_CHROMIUM``); it
never downloads a browser. Without one, :func:`require_browser` skips the test, or fails it
where ``SEGBENCH_REQUIRE_BROWSER=1`` (CI: a missing browser must not pass as a skip).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DEFAULT_CHROMIUM = "/usr/bin/chromium"

# Headless, no sandbox (CI runs as root), and none of the browser's own background traffic
# (component updates, sync, ...), which fails without a network and would read as page failures.
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers' /dev/shm is often 64 MB: Chromium crashes on it
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Every <img> on the page after each has been given the chance to decode, the comparison table's
# rows and the galleries. "decoded" is what a reader sees as a picture, not a broken-image icon.
_INSPECT = """
async () => {
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map((img) => img.decode().catch(() => null)));
  const describe = (img) => {
    const src = img.getAttribute("src") || "";
    const box = img.getBoundingClientRect();
    const caption = img.closest("figure")?.querySelector("figcaption");
    return {
      alt: img.getAttribute("alt"),
      src: src.slice(0, 40),
      embedded: src.startsWith("data:image/") && src.includes(";base64,"),
      mime: src.startsWith("data:") ? src.slice(5, src.search(/[;,]/)) : null,
      decoded: img.complete && img.naturalWidth > 0,
      width: img.naturalWidth,
      height: img.naturalHeight,
      visible: box.width > 0 && box.height > 0
        && img.checkVisibility({opacityProperty: true, visibilityProperty: true}),
      caption: caption ? caption.textContent.trim() : null,
    };
  };
  return {
    title: document.title,
    models: Array.from(document.querySelectorAll("#comparison tbody tr[data-model]"))
      .map((tr) => tr.dataset.model),
    galleries: Array.from(document.querySelectorAll("section.gallery")).map((section) => {
      const images = Array.from(section.querySelectorAll("figure img")).map(describe);
      return {
        model: section.dataset.model ?? null,
        n_images: images.length,
        n_decoded: images.filter((i) => i.decoded).length,
        images,
      };
    }),
    images: imgs.map(describe),
    page_width: document.documentElement.scrollWidth,
    page_height: document.documentElement.scrollHeight,
  };
}
"""


def chromium_path() -> Path:
    return Path(os.environ.get("SEGBENCH_CHROMIUM") or DEFAULT_CHROMIUM)


def browser_problem() -> str | None:
    """Why no browser can be driven here (no Chromium, no playwright), or None."""
    path = chromium_path()
    if not (path.is_file() and os.access(path, os.X_OK)):
        return (
            f"no Chromium at {path}: `apt-get install chromium`, or point SEGBENCH_CHROMIUM at one"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: `make setup` installs the dev extras"
    return None


def _required() -> bool:
    return os.environ.get("SEGBENCH_REQUIRE_BROWSER") == "1"


def require_browser() -> Path:
    """The Chromium to drive; skip the test without one (fail under SEGBENCH_REQUIRE_BROWSER=1)."""
    problem = browser_problem()
    if problem and _required():
        pytest.fail(f"{problem} (SEGBENCH_REQUIRE_BROWSER=1)", pytrace=False)
    if problem:
        pytest.skip(problem)
    return chromium_path()


def browser_available() -> bool:
    """For a browser check inside a larger test: False without a browser (the rest of the test
    still counts), a failure under SEGBENCH_REQUIRE_BROWSER=1."""
    problem = browser_problem()
    if problem and _required():
        pytest.fail(f"{problem} (SEGBENCH_REQUIRE_BROWSER=1)", pytrace=False)
    return problem is None


def check_report_in_browser(
    html_path: str | Path, screenshot_path: str | Path, *, timeout_ms: int = 30_000
) -> dict:
    """Load ``html_path`` (a file:// URL) in headless Chromium, save a full-page screenshot to
    ``screenshot_path`` and return what was seen (callers check :func:`require_browser` or
    :func:`browser_available` first; without a browser this raises RuntimeError):

    - ``console_errors``, ``page_errors`` (uncaught exceptions), ``failed_requests``;
    - ``requests``: every URL the page asked for besides itself and data: URIs (a
      self-contained page asks for none);
    - ``models``: the ``data-model`` of each ``#comparison tbody tr``, in order;
    - ``galleries``: per ``section.gallery``: ``model``, ``n_images``, ``n_decoded`` and
      ``images`` (each: ``embedded`` (a base64 data: URI), ``mime``, ``decoded``, ``visible``,
      ``width``, ``height``, ``caption``);
    - ``images``: the same for every ``<img>`` on the page; ``title``, ``page_width/height``.
    """
    problem = browser_problem()
    if problem:
        raise RuntimeError(problem)
    from playwright.sync_api import sync_playwright

    url = Path(html_path).resolve().as_uri()
    console_errors: list[str] = []
    page_errors: list[str] = []
    failed: list[str] = []
    requests: list[str] = []

    def on_console(msg) -> None:
        if msg.type == "error":
            console_errors.append(msg.text)

    def on_request(request) -> None:
        if request.url != url and not request.url.startswith("data:"):
            requests.append(request.url)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(chromium_path()), args=LAUNCH_ARGS, timeout=timeout_ms
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", on_console)
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            page.on("request", on_request)
            page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
            page.goto(url, wait_until="load", timeout=timeout_ms)
            found = page.evaluate(_INSPECT)
            Path(screenshot_path).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot_path), full_page=True, timeout=timeout_ms)
        finally:
            browser.close()
    return {
        "console_errors": console_errors,
        "page_errors": page_errors,
        "failed_requests": failed,
        "requests": requests,
        **found,
    }
