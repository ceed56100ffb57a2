"""Data Docs that read offline: no CDN, no external request, tables rendered in the HTML.

GX's page templates load Bootstrap, jQuery, bootstrap-table, Font Awesome and
Vega from CDNs, and fill every table (the index among them) from JavaScript;
offline, the normal case here, pages come out unstyled and the index empty.
GX's loader puts a plugin's templates after its own, so they cannot be
overridden; instead each built page is rewritten: external ``<link>`` and
``<script src>`` elements, logos and CSS ``url()``s are removed, and each bootstrap-table script is
replaced by the table it would have drawn. The styles come from
``gx/plugins/custom_data_docs/styles/data_docs_custom_styles.css``, which GX
inlines into every page.
"""

from __future__ import annotations

import ast
import html
import os
import re
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

_EXTERNAL_LINK = re.compile(r"<link\b[^>]*\bhref=[\"']?(?:https?:)?//[^>]*>\s*", re.IGNORECASE)
_EXTERNAL_SCRIPT = re.compile(
    r"<script\b[^>]*\bsrc=[\"']?(?:https?:)?//[^>]*>\s*</script>\s*", re.IGNORECASE
)
_EXTERNAL_IMAGE = re.compile(r"<img\b[^>]*\bsrc=[\"']?(?:https?:)?//[^>]*>", re.IGNORECASE)
_EXTERNAL_CSS_URL = re.compile(r"url\(\s*[\"']?(?:https?:)?//[^)]*\)", re.IGNORECASE)
# The script bootstrap_table.j2 writes after each (empty) table.
_TABLE_SCRIPT = re.compile(
    r"<table\s+id=\"(?P<id>[^\"]+)\"(?P<attrs>[^>]*)>\s*</table>(?P<between>.*?)"
    r"<script>\s*\$\('#(?P=id)'\)\.bootstrapTable\(\s*Object\.assign\(\s*\{\s*"
    r"columns:\s*(?P<columns>\[.*?\]),\s*data:\s*(?P<data>\[.*?\]),\s*toolbar:.*?</script>",
    re.DOTALL,
)
# Scripts left without their libraries: jQuery calls and GX's table helpers.
_DEAD_SCRIPT = re.compile(
    r"<script>(?:(?!</script>).)*?\$\((?:(?!</script>).)*</script>", re.DOTALL
)


def offline_sites(context: Any) -> list[Path]:
    """Rewrite every Data Docs site of ``context`` (see the module docstring); their roots."""
    roots = []
    for site in context.get_docs_sites_urls():
        url = urlparse(site["site_url"])
        if url.scheme != "file":
            continue
        root = Path(unquote(url.path)).parent
        for page in root.rglob("*.html"):
            _rewrite(page)
        roots.append(root)
    return roots


def offline_html(text: str) -> str:
    """One page, rewritten to need nothing from the network."""
    text = _TABLE_SCRIPT.sub(_static_table, text)
    text = _EXTERNAL_LINK.sub("", text)
    text = _EXTERNAL_SCRIPT.sub("", text)
    text = _EXTERNAL_IMAGE.sub("", text)
    text = _EXTERNAL_CSS_URL.sub("none", text)
    return _DEAD_SCRIPT.sub("", text)


def _rewrite(page: Path) -> None:
    text = offline_html(page.read_text(encoding="utf-8"))
    # Atomic: a reader never sees half a page.
    handle, temporary = tempfile.mkstemp(dir=page.parent, prefix=".offline-", suffix=".html")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(temporary, page)


def _static_table(match: re.Match[str]) -> str:
    """The table a bootstrap-table script would draw, as plain HTML.

    Columns and rows are Python literals in the page (GX renders them with
    ``str``), read with ``ast.literal_eval``, which evaluates nothing else.
    Cells hold HTML that GX itself rendered (links, badges), kept as it is.
    """
    try:
        columns = ast.literal_eval(match["columns"])
        rows = ast.literal_eval(match["data"])
    except (ValueError, SyntaxError):
        return match[0]  # not the shape GX writes: leave the page as it is
    head = "".join(f"<th>{html.escape(str(c.get('title', c['field'])))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{row.get(c['field'], '')}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return (
        f'<table id="{match["id"]}"{match["attrs"]}>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{match['between']}"
    )
