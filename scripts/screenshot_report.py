"""Screenshot of an HTML report (e.g. `jaxcxr demo`'s report.html) as a PNG, with headless Chromium.

    python scripts/screenshot_report.py jaxcxr_demo/report.html report.png [--width 1400] [--height 9000]

Uses the first Chromium-family browser found: `$CHROMIUM`, else `chromium`, `chromium-browser`,
`google-chrome`, `google-chrome-stable` on the PATH (Debian: `apt-get install chromium`). Runs
it as `--headless --screenshot=OUT --window-size=W,H file://REPORT`; the page is clipped to H
pixels, so make H at least the page's height. Exits with status 3 when no browser is found.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
EXIT_NO_BROWSER = 3


def find_chromium() -> str | None:
  """The path of a Chromium-family browser ($CHROMIUM first), or None."""
  candidates = ([os.environ["CHROMIUM"]] if os.environ.get("CHROMIUM") else []) + list(BROWSERS)
  for name in candidates:
    path = shutil.which(name)
    if path:
      return path
  return None


def screenshot(report: str | os.PathLike, out: str | os.PathLike, *, width: int = 1400, height: int = 9000,
               browser: str | None = None, timeout: float = 120.0) -> pathlib.Path:
  """Renders `report` in headless Chromium and writes the top `height` pixels as the PNG `out`.

  Args:
    report: the HTML file.
    out: the PNG to write (parent folders are created).
    width, height: the browser window in CSS pixels.
    browser: the browser binary (default `find_chromium()`).
    timeout: seconds before the browser is killed.

  Returns:
    The PNG path.

  Raises:
    FileNotFoundError: no report, or no browser.
    RuntimeError: the browser failed or wrote no PNG (its output is in the message).
  """
  report = pathlib.Path(report).resolve()
  out = pathlib.Path(out).resolve()
  if not report.is_file():
    raise FileNotFoundError(f"{report}: no such file")
  browser = browser or find_chromium()
  if browser is None:
    raise FileNotFoundError(f"no Chromium-family browser found (tried $CHROMIUM and {', '.join(BROWSERS)})")
  out.parent.mkdir(parents=True, exist_ok=True)
  out.unlink(missing_ok=True)
  with tempfile.TemporaryDirectory(prefix="jaxcxr_chromium_") as profile:
    # --no-sandbox: Chromium refuses to run as root (containers, CI) with its sandbox on; the page is
    # our own local file. A fresh profile keeps the run independent of any user profile.
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--window-size={width},{height}", f"--screenshot={out}",
               report.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
  if done.returncode != 0 or not out.is_file():
    raise RuntimeError(f"{' '.join(command)} failed (status {done.returncode}):\n{done.stderr[-2000:]}")
  return out


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("report", help="the HTML file")
  parser.add_argument("out", help="the PNG to write")
  parser.add_argument("--width", type=int, default=1400)
  parser.add_argument("--height", type=int, default=9000, help="window height; the page below it is cut off")
  args = parser.parse_args(argv)
  if find_chromium() is None:
    print(f"screenshot_report: no Chromium-family browser found (tried $CHROMIUM and {', '.join(BROWSERS)})",
          file=sys.stderr)
    return EXIT_NO_BROWSER
  print(screenshot(args.report, args.out, width=args.width, height=args.height))
  return 0


if __name__ == "__main__":
  sys.exit(main())
