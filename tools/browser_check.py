"""Open every page of a built book in headless Chromium and report what a reader would see broken.

Used by ``tests/test_site.py``; also runs on its own:

    .venv/bin/python tools/browser_check.py _build/html [--screenshots _build/screenshots]

The site is served by a local ``http.server`` on 127.0.0.1 (a free port). The browser is the
system Chromium (Debian's ``chromium`` package, ``/usr/bin/chromium``) driven by the PyPI
``playwright`` package with ``executable_path``: never ``playwright install``, which downloads a
browser build of its own. Every request to another host is blocked and reported, so a page
that needs the network fails here as it would for an offline reader.

Per page it records: console errors and uncaught exceptions, failed or 4xx/5xx requests,
math elements that MathJax did not typeset and MathJax's own TeX errors, raw TeX delimiters
left in the visible text, images that did not load or have no descriptive alt text, code boxes
(cells, outputs, code blocks, solutions opened) wider than the page's column, dropdowns, and saved
ipywidgets (whether the widget manager rendered them).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import os
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Folders of the built site that hold assets, not pages.
ASSET_DIRS = {"_static", "_sources", "_images", "_downloads", "mathjax", "widgets"}
# Browsers ask for /favicon.ico on their own when a page declares no icon; not the page's request.
BROWSER_OWN_REQUESTS = ("/favicon.ico",)
VIEWPORT = {"width": 1280, "height": 800}

# Runs in the page after load: waits for MathJax, then the widget manager, then collects facts.
_COLLECT_JS = """
async ({widgetTimeout}) => {
  const out = {};
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
    out.mathjax = true;
  } else {
    out.mathjax = false;
  }
  const views = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]');
  out.widget_views = views.length;
  if (views.length) {
    const t0 = Date.now();
    while (document.querySelectorAll('.jupyter-widgets').length === 0 && Date.now() - t0 < widgetTimeout) {
      await new Promise(r => setTimeout(r, 100));
    }
  }
  out.widgets_rendered = document.querySelectorAll('.jupyter-widgets').length;
  const math = Array.from(document.querySelectorAll('.math'));
  out.math_elements = math.length;
  out.untypeset = math.filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.trim().slice(0, 80));
  out.mjx_containers = document.querySelectorAll('mjx-container').length;
  out.tex_errors = Array.from(document.querySelectorAll('mjx-merror'))
    .map(e => (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 120));
  const root = document.querySelector('main') || document.body;
  const clone = root.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, textarea, mjx-container, .highlight').forEach(e => e.remove());
  const text = clone.textContent;
  out.raw_tex = [];
  const re = /\\$\\$|\\\\\\(|\\\\\\)|\\\\\\[|\\\\\\]|\\\\begin\\{/g;
  let m;
  while ((m = re.exec(text)) !== null && out.raw_tex.length < 5) {
    out.raw_tex.push(text.slice(Math.max(0, m.index - 30), m.index + 40).replace(/\\s+/g, ' '));
  }
  // code (cells, their outputs, code blocks) wider than its box: the reader would have to scroll sideways
  document.querySelectorAll('main details').forEach(d => { d.open = true; });  // solutions too
  out.scrolling_code = Array.from(document.querySelectorAll('main pre'))
    .filter(e => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 1)
    .map(e => {
      const lines = e.textContent.split('\\n');
      const widest = lines.reduce((a, b) => (b.length > a.length ? b : a), '');
      return `${e.scrollWidth - e.clientWidth}px too wide (${widest.length} chars): ${widest.slice(0, 100)}`;
    });
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(img => { img.loading = 'eager'; return img.decode().catch(() => null); }));
  out.images = imgs.map(img => ({
    src: img.getAttribute('src') || '',
    url: img.currentSrc || img.src,
    alt: img.getAttribute('alt'),
    natural_width: img.naturalWidth,
    visible: img.getClientRects().length > 0,
    classes: img.className || '',
  }));
  out.dropdowns = document.querySelectorAll('.dropdown.admonition').length;
  out.title = document.title;
  const h1 = document.querySelector('main h1') || document.querySelector('h1');
  out.h1 = h1 ? h1.textContent.replace(/[#¶]/g, '').trim() : '';
  return out;
}
"""


# Contrast of the first paragraphs of the main text against their (first opaque) background.
_CONTRAST_JS = """
() => {
  const rgba = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = el => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c.length >= 3 && (c.length < 4 || c[3] > 0.5)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const paragraphs = Array.from(document.querySelectorAll('main p')).filter(p => p.textContent.trim()).slice(0, 10);
  let worst = null;
  for (const p of paragraphs) {
    const fg = rgba(getComputedStyle(p).color).slice(0, 3), bg = background(p);
    const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    const ratio = (a + 0.05) / (b + 0.05);
    if (!worst || ratio < worst.ratio) worst = {ratio, color: fg, background: bg};
  }
  return Object.assign(worst || {ratio: 0, color: [], background: []}, {theme: document.documentElement.dataset.theme || ''});
}
"""


@dataclass
class PageReport:
    """What one page looked like in the browser."""

    path: str
    title: str = ""
    h1: str = ""
    redirect: str | None = None
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    mathjax: bool = False
    math_elements: int = 0
    mjx_containers: int = 0
    untypeset: list[str] = field(default_factory=list)
    tex_errors: list[str] = field(default_factory=list)
    raw_tex: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    dropdowns: int = 0
    widget_views: int = 0
    scrolling_code: list[str] = field(default_factory=list)  # code boxes the reader must scroll sideways
    widgets_rendered: int = 0
    screenshot: str | None = None

    @property
    def broken_images(self) -> list[str]:
        return [img["src"] for img in self.images if not img["natural_width"]]

    @property
    def images_without_alt(self) -> list[str]:
        """Images whose alt text is missing, empty, or just the file's own path (docutils' default)."""
        bad = []
        for img in self.images:
            alt = (img["alt"] or "").strip()
            if not alt or alt == img["src"] or alt == Path(urlsplit(img["src"]).path).name:
                bad.append(img["src"])
        return bad

    def problems(self) -> list[str]:
        """Every problem on the page, one line each."""
        out = [f"console error: {m}" for m in self.console_errors]
        out += [f"request failed: {u}" for u in self.failed_requests]
        out += [f"request to another host (blocked): {u}" for u in self.external_requests]
        if self.math_elements and not self.mathjax:
            out.append(f"MathJax did not load: {self.math_elements} math elements left as raw TeX")
        out += [f"math not typeset: {t!r}" for t in self.untypeset[:5]]
        out += [f"TeX error: {t}" for t in self.tex_errors]
        out += [f"raw TeX in the text: ...{t}..." for t in self.raw_tex]
        out += [f"image did not load: {s}" for s in self.broken_images]
        out += [f"image without descriptive alt text: {s}" for s in self.images_without_alt]
        out += [f"code box scrolls sideways at {VIEWPORT['width']} px: {c}" for c in self.scrolling_code]
        if self.widget_views and not self.widgets_rendered:
            out.append(f"{self.widget_views} saved widget(s) not rendered")
        return out


def find_chromium() -> str | None:
    """The system Chromium: ``$COMPANION_CHROMIUM``, else the first Chromium or Chrome on PATH."""
    env = os.environ.get("COMPANION_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def site_pages(root: Path) -> list[str]:
    """Relative paths (posix) of the HTML pages of a built site, assets excluded."""
    root = Path(root)
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*.html")
        if _edition_relative(p.relative_to(root).as_posix()).split("/")[0] not in ASSET_DIRS
    )


def _edition_relative(path: str) -> str:
    """A page's path inside its edition: ``zh/notebooks/x.html`` -> ``notebooks/x.html``."""
    return path.removeprefix("zh/")


def redirect_target(html: str) -> str | None:
    """The URL of a ``<meta http-equiv="refresh">`` redirect page, else None."""
    m = re.search(r"""<meta\s+http-equiv=["']refresh["'][^>]*content=["'][^;]*;\s*url=([^"']+)["']""", html, re.I)
    return m.group(1) if m else None


def chapter_pages(pages: list[str]) -> list[str]:
    """Pages that are chapters or book pages, in either edition (screenshots are taken of these)."""
    return [p for p in pages if _edition_relative(p).split("/")[0] in {"book", "notebooks"}]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@contextlib.contextmanager
def serve(root: Path) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1 at a free port; yields the base URL (ending in '/')."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class SiteChecker:
    """A served site and a headless Chromium; check pages, click dropdowns, search.

    Use as a context manager::

        with SiteChecker("_build/html") as checker:
            report = checker.check_page("book/preface.html", screenshot="shot.png")
    """

    def __init__(self, root: str | Path, chromium: str | None = None, timeout_ms: int = 30_000):
        self.root = Path(root)
        self.chromium = chromium or find_chromium()
        if self.chromium is None:
            raise FileNotFoundError("no Chromium found: apt-get install chromium, or set COMPANION_CHROMIUM")
        self.timeout_ms = timeout_ms
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> SiteChecker:
        from playwright.sync_api import sync_playwright

        try:
            self.base = self._stack.enter_context(serve(self.root))
            self._pw = self._stack.enter_context(sync_playwright())
            self.browser = self._pw.chromium.launch(executable_path=self.chromium, args=CHROMIUM_ARGS)
            self._stack.callback(self.browser.close)
            self.context = self.browser.new_context(viewport=VIEWPORT)
            self.context.set_default_timeout(self.timeout_ms)
            local = re.escape(self.base)
            self._external: list[str] = []

            def block(route):
                self._external.append(route.request.url)
                route.abort()

            self.context.route(re.compile(rf"^(?!{local}|data:|blob:|about:)"), block)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def url(self, path: str) -> str:
        return self.base + quote(path)

    def check_page(self, path: str, screenshot: str | Path | None = None, widget_timeout_ms: int = 10_000) -> PageReport:
        """Load one page, wait for MathJax and widgets, and collect what the reader sees."""
        report = PageReport(path=path)
        html = (self.root / path).read_text(encoding="utf-8", errors="replace")
        target = redirect_target(html)
        if target is not None:
            report.redirect = target
            return report
        page = self.context.new_page()
        self._external.clear()

        def on_console(msg):
            if msg.type == "error":
                where = msg.location.get("url", "") if msg.location else ""
                if not any(where.endswith(r) for r in BROWSER_OWN_REQUESTS):
                    report.console_errors.append(msg.text)

        def on_response(response):
            if response.status >= 400 and not any(urlsplit(response.url).path == r for r in BROWSER_OWN_REQUESTS):
                report.failed_requests.append(f"{response.status} {response.url}")

        def on_failed(request):
            if request.url not in self._external:
                report.failed_requests.append(f"{request.failure} {request.url}")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: report.console_errors.append(f"uncaught exception: {exc}"))
        page.on("response", on_response)
        page.on("requestfailed", on_failed)
        try:
            page.goto(self.url(path), wait_until="load")
            facts = page.evaluate(_COLLECT_JS, {"widgetTimeout": widget_timeout_ms})
            for key, value in facts.items():
                setattr(report, key, value)
            if screenshot is not None:
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                page.evaluate("() => window.scrollTo(0, 0)")
                page.screenshot(path=str(screenshot))
                report.screenshot = str(screenshot)
        finally:
            # Detach first: closing the page aborts requests still in flight, which are not the page's fault.
            page.remove_listener("console", on_console)
            page.remove_listener("response", on_response)
            page.remove_listener("requestfailed", on_failed)
            report.external_requests = list(self._external)
            page.close()
        return report

    def open_first_dropdown(self, path: str) -> tuple[bool, bool, str]:
        """Click the toggle of the first dropdown on ``path`` (the button sphinx-togglebutton adds).

        Returns ``(hidden_before, visible_after, title)``: whether its content was hidden
        before the click and shown after it.
        """
        page = self.context.new_page()
        try:
            page.goto(self.url(path), wait_until="load")
            page.wait_for_function(
                "() => document.querySelector('.dropdown.admonition .toggle-button, .dropdown.admonition details')",
                timeout=self.timeout_ms,
            )
            dropdown = page.locator(".dropdown.admonition").first
            title = dropdown.locator(".admonition-title").first
            content = dropdown.locator(":scope > :not(.admonition-title)").first
            hidden_before = not content.is_visible()
            title_text = title.inner_text().strip()
            # The title usually holds a link to the exercise; the toggle is the button beside it.
            toggle = dropdown.locator(".toggle-button, summary").first
            (toggle if toggle.count() else title).click()
            try:
                content.wait_for(state="visible", timeout=5_000)
            except Exception:  # noqa: BLE001 - playwright's TimeoutError; reported as not visible
                pass
            return hidden_before, content.is_visible(), title_text
        finally:
            page.close()

    def text_contrast(self, path: str, color_scheme: str = "dark", screenshot: str | Path | None = None) -> dict:
        """WCAG contrast ratio of the main text against its background, in the given colour scheme.

        The browser reports ``prefers-color-scheme: <color_scheme>`` and the theme is left on
        "auto", as for a reader whose system is in dark mode. Returns ``{"ratio", "color",
        "background", "theme"}`` for the worst of the first paragraphs of the page.
        """
        context = self.browser.new_context(viewport=VIEWPORT, color_scheme=color_scheme)
        try:
            page = context.new_page()
            page.goto(self.url(path), wait_until="load")
            result = page.evaluate(_CONTRAST_JS)
            if screenshot is not None:
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot))
            return result
        finally:
            context.close()

    def follow_language_switch(self, path: str) -> str:
        """Click the page's link to the other edition; return the site-relative path it leads to."""
        page = self.context.new_page()
        try:
            page.goto(self.url(path), wait_until="load")
            page.click("a.language-switch")
            page.wait_for_load_state("load")
            url = page.url
        finally:
            page.close()
        return url[len(self.base):] if url.startswith(self.base) else url

    def fonts_of(self, path: str, selector: str) -> list[dict]:
        """The fonts Chromium used to draw the text of ``selector`` on ``path`` (family, glyphs)."""
        page = self.context.new_page()
        try:
            page.goto(self.url(path), wait_until="load")
            cdp = self.context.new_cdp_session(page)
            cdp.send("DOM.enable")
            cdp.send("CSS.enable")
            root = cdp.send("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
            node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
            if not node:
                raise LookupError(f"{path}: nothing matches {selector!r}")
            fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
        finally:
            page.close()
        return fonts

    def search(self, term: str, search_page: str = "search.html") -> list[str]:
        """Run the site's own search page for ``term``; return the result links (site-relative)."""
        page = self.context.new_page()
        try:
            page.goto(self.url(search_page) + "?q=" + quote(term), wait_until="load")
            page.wait_for_function(
                "() => { const r = document.querySelector('#search-results');"
                " return r && /Search finished|found|did not match|搜索完成|找到|没有/i.test(r.innerText); }",
                timeout=self.timeout_ms,
            )
            hrefs = page.eval_on_selector_all("#search-results ul.search li a", "els => els.map(a => a.href)")
        finally:
            page.close()
        return [h[len(self.base):] if h.startswith(self.base) else h for h in hrefs]


def screenshot_name(path: str) -> str:
    """``notebooks/90_errata.html`` -> ``notebooks-90_errata.png``."""
    return path.removesuffix(".html").replace("/", "-") + ".png"


def check_site(root: str | Path, screenshots: str | Path | None = None) -> dict[str, PageReport]:
    """Check every page of a built site; screenshots of the chapters' first screen if asked."""
    root = Path(root)
    pages = site_pages(root)
    chapters = set(chapter_pages(pages))
    reports = {}
    with SiteChecker(root) as checker:
        for path in pages:
            shot = Path(screenshots) / screenshot_name(path) if screenshots and path in chapters else None
            reports[path] = checker.check_page(path, screenshot=shot)
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", nargs="?", default="_build/html", help="the built site (default: _build/html)")
    parser.add_argument("--screenshots", help="write a screenshot of each chapter's first screen here")
    parser.add_argument("--json", help="write the full per-page report as JSON to this file")
    args = parser.parse_args(argv)
    root = Path(args.site)
    if not (root / "index.html").exists():
        print(f"no built site in {root} (no index.html)")
        return 2
    reports = check_site(root, args.screenshots)
    n_bad = 0
    for path, report in reports.items():
        problems = report.problems()
        n_bad += bool(problems)
        status = "redirect" if report.redirect else ("FAIL" if problems else "ok")
        print(f"{status:8s} {path}  ({report.math_elements} math, {len(report.images)} images)")
        for p in problems:
            print(f"         - {p}")
    if args.json:
        import json

        Path(args.json).write_text(json.dumps({k: asdict(v) for k, v in reports.items()}, indent=1))
    print(f"{len(reports)} pages checked, {n_bad} with problems")
    return 1 if n_bad else 0


if __name__ == "__main__":
    sys.exit(main())
