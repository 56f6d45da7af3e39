"""Take a full-page screenshot of a run's report.html in headless Chromium.

Usage: python scripts/report_screenshot.py RUN_DIR OUT.png [--top PIXELS] [--height PIXELS] [--width PIXELS]

--top and --height crop the screenshot to the rows from TOP to TOP + HEIGHT,
and --width to its left WIDTH columns (default: the whole page). Exits 1 when the page logs a console error or an
image fails to load.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from edgemia.reporting.browser import check_page


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--top", type=int, default=0, help="first row of the crop, in pixels (default: 0)")
    parser.add_argument("--height", type=int, default=None, help="rows of the crop, in pixels (default: to the end)")
    parser.add_argument("--width", type=int, default=None, help="columns of the crop, in pixels (default: all)")
    args = parser.parse_args()

    check = check_page(args.run_dir / "report.html", screenshot=True)
    png = check.screenshot
    if args.top or args.height is not None or args.width is not None:
        from PIL import Image

        image = Image.open(io.BytesIO(png))
        buffer = io.BytesIO()
        bottom = image.height if args.height is None else min(args.top + args.height, image.height)
        right = image.width if args.width is None else min(args.width, image.width)
        image.crop((0, args.top, right, bottom)).save(buffer, format="PNG", optimize=True)
        png = buffer.getvalue()
    args.out.write_bytes(png)
    print(f"{args.out}: {len(png)} bytes; {len(check.images)} images, {len(check.broken_images)} broken, "
          f"{len(check.console_errors)} console errors")
    for error in check.console_errors:
        print(f"console error: {error}", file=sys.stderr)
    return 1 if check.console_errors or check.broken_images else 0


if __name__ == "__main__":
    raise SystemExit(main())
