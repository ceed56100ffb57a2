"""The page ``dvc plots show`` writes, with Vega, Vega-Lite and Vega-Embed inline.

DVC's default page loads them from a CDN, so offline (a hospital network) it is blank.
``make install`` writes this template from the bundle the ``vl-convert-python`` wheel
ships (nothing is downloaded at run time); ``.dvc/config`` names it as
``plots.html_template``.

    python -m custodian.plots_page .dvc/plots.html
"""

from __future__ import annotations

import sys
from pathlib import Path

import vl_convert

from audits.files import atomic_write_text

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
    <script>
BUNDLE
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def page() -> str:
    """The template: DVC fills ``{plot_divs}``; the libraries are inline, not fetched."""
    bundle = vl_convert.javascript_bundle()
    # A literal "</script" inside the code would end the element early.
    return PAGE.replace("BUNDLE", bundle.replace("</script", "<\\/script"))


def main(argv: list[str]) -> None:
    (target,) = argv
    atomic_write_text(Path(target), page())


if __name__ == "__main__":
    main(sys.argv[1:])
