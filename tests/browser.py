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
# Every <table>, with how it sits in its container (its parent: a `.scroll` box, or the body)
# and in the window: "clipped" cells have more text than the cell shows, cells "out of view"
# reach past what a reader sees without scrolling sideways (0.5 px absorbs sub-pixel rounding).
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
  // The right edge of what a reader sees without scrolling sideways: the window (less its
  // vertical scrollbar), or a scrolling container's visible box if that is narrower.
  const pageRight = document.documentElement.clientWidth;
  const layout = (table) => {
    const box = table.parentElement;
    const right = Math.min(
      box.getBoundingClientRect().left + box.clientLeft + box.clientWidth, pageRight);
    const cells = Array.from(table.querySelectorAll("th, td"));
    const where = (cell) => ({
      row: cell.parentElement.dataset.model ?? cell.parentElement.rowIndex,
      column: cell.cellIndex,
      text: cell.textContent.trim().slice(0, 60),
    });
    const rect = table.getBoundingClientRect();
    return {
      id: table.id || null,
      class: table.className || null,
      rows: table.tBodies[0] ? table.tBodies[0].rows.length : table.rows.length,
      scroll_width: table.scrollWidth,
      width: rect.width,
      right: rect.right,
      top: rect.top + window.scrollY,
      bottom: rect.bottom + window.scrollY,
      container: box.tagName.toLowerCase() + (box.className ? `.${box.className}` : ""),
      container_client_width: box.clientWidth,
      container_scroll_width: box.scrollWidth,
      clipped_cells: cells.filter((c) => c.scrollWidth > c.clientWidth + 0.5).map(where),
      cells_out_of_view: cells
        .filter((c) => c.getBoundingClientRect().right > right + 0.5).map(where),
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
    viewport: {width: window.innerWidth, height: window.innerHeight, client_width: pageRight},
    tables: Array.from(document.querySelectorAll("table")).map(layout),
  };
}
"""


def artifacts_dir() -> Path:
    """Where browser tests keep screenshots for a human to look at (``SEGBENCH_TEST_ARTIFACTS``,
    else ``test-artifacts/`` at the repository root)."""
    repo = Path(__file__).resolve().parents[1]
    return Path(os.environ.get("SEGBENCH_TEST_ARTIFACTS") or repo / "test-artifacts")


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
    html_path: str | Path,
    screenshot_path: str | Path,
    *,
    viewport: tuple[int, int] = (1280, 800),
    full_page: bool = True,
    timeout_ms: int = 30_000,
) -> dict:
    """Load ``html_path`` (a file:// URL) in headless Chromium in a ``viewport`` (width, height)
    window, save a screenshot (the full page, or only the window) to ``screenshot_path`` and
    return what was seen (callers check :func:`require_browser` or :func:`browser_available`
    first; without a browser this raises RuntimeError):

    - ``console_errors``, ``page_errors`` (uncaught exceptions), ``failed_requests``;
    - ``requests``: every URL the page asked for besides itself and data: URIs (a
      self-contained page asks for none);
    - ``models``: the ``data-model`` of each ``#comparison tbody tr``, in order;
    - ``galleries``: per ``section.gallery``: ``model``, ``n_images``, ``n_decoded`` and
      ``images`` (each: ``embedded`` (a base64 data: URI), ``mime``, ``decoded``, ``visible``,
      ``width``, ``height``, ``caption``);
    - ``images``: the same for every ``<img>`` on the page; ``title``, ``page_width/height``
      (the document's scroll size, CSS px);
    - ``viewport``: the window's ``width``, ``height`` and ``client_width`` (less a scrollbar);
    - ``tables``: per ``<table>``: ``id``, ``class``, ``rows`` (in its body), ``scroll_width``,
      ``width``, ``right``, ``top`` and ``bottom`` (its box; top/bottom in page coordinates,
      as in a full-page screenshot), ``container`` (e.g. ``div.scroll``: its parent),
      ``container_client_width``, ``container_scroll_width``, ``clipped_cells`` (text wider
      than the cell) and ``cells_out_of_view`` (past the container's visible box or the
      window), each cell as ``{row, column, text}``. :func:`overflow` reads these.
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
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.on("console", on_console)
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            page.on("request", on_request)
            page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
            page.goto(url, wait_until="load", timeout=timeout_ms)
            found = page.evaluate(_INSPECT)
            Path(screenshot_path).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot_path), full_page=full_page, timeout=timeout_ms)
        finally:
            browser.close()
    return {
        "console_errors": console_errors,
        "page_errors": page_errors,
        "failed_requests": failed,
        "requests": requests,
        **found,
    }


def table_layout(seen: dict, table_id: str) -> dict:
    """The ``tables`` entry of :func:`check_report_in_browser`'s result for ``<table id=...>``."""
    found = [t for t in seen["tables"] if t["id"] == table_id]
    if not found:
        raise AssertionError(f"no <table id={table_id!r}> on the page: {seen['tables']}")
    return found[0]


def overflow(seen: dict, table_id: str) -> list[str]:
    """Why a reader would have to scroll sideways to read ``<table id=...>`` whole, as seen by
    :func:`check_report_in_browser` (empty: it fits): the table wider than its container, the
    page wider than the window, cells whose text is cut or that lie out of view."""
    table = table_layout(seen, table_id)
    problems = []
    if table["scroll_width"] > table["container_client_width"]:
        problems.append(
            f"#{table_id} is {table['scroll_width']} px wide in a {table['container']} "
            f"{table['container_client_width']} px wide"
        )
    if seen["page_width"] > seen["viewport"]["width"]:
        problems.append(
            f"the page is {seen['page_width']} px wide in a {seen['viewport']['width']} px window"
        )
    for kind in ("clipped_cells", "cells_out_of_view"):
        if table[kind]:
            problems.append(f"{kind.replace('_', ' ')}: {table[kind]}")
    return problems
