"""What the console's browser tests share: Debian's Chromium driven by Playwright,
where screenshots go, the check that the console's vendored libraries are built,
and the human-readable check of a page (a list of texts that must be visible)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output" / "console"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--autoplay-policy=no-user-gesture-required", "--mute-audio"]
VENDOR = ROOT / "origin" / "console" / "static" / "vendor"
VENDORED = ("tus.min.js", "hls.min.js", "uPlot.iife.min.js")


def require_browser() -> None:
    """Fail (never skip) when the browser or the console's libraries are missing."""
    missing = [name for name in VENDORED if not (VENDOR / name).is_file()]
    if missing or not Path(CHROMIUM).exists():
        pytest.fail(f"console vendor files {missing} or {CHROMIUM} missing; "
                    "run origin/console/build.sh (make setup)")


def invisible_texts(page: Any, texts: list[str], within: str = "main") -> list[str]:
    """The texts of ``texts`` that are NOT visible in ``within``."""
    body = page.inner_text(within)
    return [t for t in texts if t not in body]


def fits_the_screen(page: Any) -> bool:
    """Nothing is wider than the viewport (no sideways scrolling of the page)."""
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


# WCAG 2.x contrast of each visible text node's colour against the first opaque
# background behind it (ancestors' background-color; images and gradients are not
# used by the console).
_CONTRAST_JS = """(root) => {
  const rgb = (c) => c.match(/[\\d.]+/g).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length < 4 || c[3] > 0.99) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const low = [];
  const walker = document.createTreeWalker(document.querySelector(root), NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!n.textContent.trim() || !el.checkVisibility() || el.closest('.u-legend, .u-axis'))
      continue;
    const a = lum(rgb(getComputedStyle(el).color)), b = lum(background(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) low.push(`${n.textContent.trim().slice(0, 40)}: ${ratio.toFixed(2)}`);
  }
  return low;
}"""


def low_contrast(page: Any, root: str = "body") -> list[str]:
    """Visible texts under ``root`` below WCAG AA for normal text (4.5:1)."""
    found: list[str] = page.evaluate(_CONTRAST_JS, root)
    return found
