"""The report in a real browser: headless Chromium loads every embedded image."""

import json
import re
import shutil
import struct
import subprocess

import pytest

from widthlab.report import build_report
from widthlab.studies import available

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (`./run test` installs it when it can)")

PROBE = ("<script>window.addEventListener('load', () => document.body.setAttribute("
         "'data-probe', JSON.stringify([...document.images].map("
         "i => [i.complete, i.naturalWidth, i.naturalHeight]))));</script>")


def _chromium(*args):
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", *args], capture_output=True, text=True,
                          timeout=120, check=True)


def test_every_image_loads_and_the_page_renders(store, tmp_path):
    out = build_report(store, None, tmp_path / "report.html", studies=available())
    page = out.read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    dom = _chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri()).stdout
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, "the page's load event never fired"
    images = json.loads(found.group(1).replace("&quot;", '"'))
    assert len(images) == page.count("<img ") == 17
    for complete, width, height in images:
        assert complete and width > 300 and height > 200  # decoded, not a broken icon

    shot = tmp_path / "shot.png"
    _chromium("--window-size=1280,3000", f"--screenshot={shot}", out.as_uri())
    head = shot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", head[16:24]) == (1280, 3000)
    assert shot.stat().st_size > 100_000  # figures drawn, not a blank page
