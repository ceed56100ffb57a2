"""`dvc plots show` offline: the page template carries the chart libraries inline."""

from __future__ import annotations

import re

from custodian.plots_page import page


def test_plots_page_loads_nothing_from_the_network() -> None:
    html = page()
    assert "{plot_divs}" in html  # DVC's placeholder, or it refuses the template
    # DVC's default page loads vega from a CDN; this one has no external script at all.
    assert not re.search(r"<script[^>]*\bsrc=", html)
    assert "window.vegaEmbed=" in html and "window.vegaLite=" in html
    # The inline bundle never closes its own element early.
    assert html.count("</script") == 1
