"""Data Docs of the checks read offline: styled, tables drawn, each expectation a sentence.

The pages are loaded in headless Chromium with every host name unresolvable
and a network log kept; the test asserts the log holds no request to any
http(s) URL, and that the page shows its findings as sentences.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from governance.checks import CheckConfig
from governance.docs_offline import offline_html
from governance.expectations import context_copy
from governance.gx_checks import run_leakage_suite, stack_splits

sys.path.insert(0, str(Path(__file__).parent))
from test_leakage_model import halves, spending  # noqa: E402

ROOT = Path(__file__).parents[2]
EXTERNAL = re.compile(r"<(?:link|script|img)\b[^>]*\b(?:href|src)=[\"']?(?:https?:)?//", re.I)


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    assert binary, (
        "chromium is not installed: run `make browser` (Debian: apt-get install chromium)"
    )
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            # The network is off: no host name resolves.
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--disable-background-networking",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    train, test = halves(spending(1500, 1))
    test.loc[:9, train.columns] = train.loc[:9, train.columns].to_numpy()  # 10 copies
    docs = tmp_path_factory.mktemp("docs")
    context = context_copy(ROOT / "gx", tmp_path_factory.mktemp("work"), docs)
    run_leakage_suite(
        context, {"train_vs_test": stack_splits(train, test, {})}, CheckConfig(label="label"), {}
    )
    return docs


def test_rewrite_removes_every_external_resource() -> None:
    page = (
        '<link rel="stylesheet" href="https://cdn.example/b.css"/>'
        '<script src="https://cdn.example/j.js"></script><img src="//x.example/logo.png">'
        "<style>.a{background:url('https://x.example/i.png')}</style>"
        '<a href="https://example.org">a link is not a request</a>'
    )
    rewritten = offline_html(page)
    assert not EXTERNAL.search(rewritten) and "url(" not in rewritten.replace("url(none", "")
    assert '<a href="https://example.org">' in rewritten


def page_requests(log: Path) -> list[str]:
    """http(s) URLs the page asked for, from Chromium's network log.

    Chromium itself talks to its update and time servers whatever the page
    does; the page's own requests are those keyed to its file:// frame.
    """
    events = []
    for line in log.read_text(encoding="utf-8").splitlines():
        line = line.strip().rstrip(",")
        if line.startswith("{") and '"params"' in line:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue  # the log's header and trailer are not events
    return [
        e["params"]["url"]
        for e in events
        if isinstance(e.get("params"), dict)
        and str(e["params"].get("url", "")).startswith(("http://", "https://"))
        and "file://" in str(e["params"].get("network_isolation_key", ""))
    ]


def requests_logged(page: Path, tmp_path: Path) -> tuple[list[str], str]:
    """(the page's http(s) requests, its rendered DOM) with the network off."""
    log = tmp_path / f"{page.stem}.netlog.json"
    dom = chromium(f"--log-net-log={log}", "--dump-dom", page.as_uri(), profile=tmp_path / "p")
    assert dom.returncode == 0, dom.stderr
    assert page.as_uri() in log.read_text(encoding="utf-8")  # the log does record loads
    return page_requests(log), dom.stdout


@pytest.mark.slow
def test_the_network_log_sees_an_external_request(tmp_path: Path) -> None:
    # The control: were the pages to ask for anything, the log would show it.
    page = tmp_path / "external.html"
    page.write_text('<img src="https://cdn.example.invalid/logo.png">', encoding="utf-8")
    assert requests_logged(page, tmp_path)[0] == ["https://cdn.example.invalid/logo.png"]


@pytest.mark.slow
def test_pages_load_with_no_network_styled_and_in_sentences(site: Path, tmp_path: Path) -> None:
    validation = next((site / "validations").rglob("*.html"))
    for page in (site / "index.html", validation):
        html = page.read_text(encoding="utf-8")
        assert not EXTERNAL.search(html), EXTERNAL.search(html)
        assert "bootstrapTable" not in html  # tables are drawn in the HTML itself

        requested, dom = requests_logged(page, tmp_path)
        assert requested == [], requested[:5]
        text = " ".join(re.sub(r"<[^>]+>", " ", dom).split())
        if page == validation:
            assert "Expect no critical target leakage finding between the splits." in text
            assert "the rule label = (clinic + pharmacy + hospital &gt; 0) holds" in text or (
                "the rule label = (clinic + pharmacy + hospital > 0) holds" in text
            )
            assert "Critical: 10 of 300 (3.33%) test rows equal a train row" in text
            assert "Example test rows: 0, 1, 2, 3, 4 and more." in text
            assert "1 finding(s), 1 critical" in text
        else:
            assert "train_vs_test" in text and "leakage" in text  # the index lists the run

        shot = tmp_path / f"{page.stem}.png"
        taken = chromium(
            f"--screenshot={shot}", "--window-size=1280,1200", page.as_uri(), profile=tmp_path / "p"
        )
        assert taken.returncode == 0 and shot.is_file(), taken.stderr
        with Image.open(shot) as image:
            grey = image.convert("L")
            assert ImageStat.Stat(grey).stddev[0] > 10  # not blank
            # Styled: the inlined stylesheet draws grey panels and coloured links and icons.
            assert len(image.convert("RGB").getcolors(1 << 20) or []) > 50
