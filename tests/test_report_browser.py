"""Headless Chromium opens the report from disk: no console errors, every plot has a non-zero size."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from robustlab.bench import write_report

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]

PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push('error: ' + e.message); });
(function () { var orig = console.error; console.error = function () {
  window.__errors.push('console.error: ' + Array.prototype.join.call(arguments, ' ')); orig.apply(console, arguments); }; })();
window.addEventListener('load', function () {
  var th = document.querySelector('table.sortable thead th:nth-child(4)');
  if (th) { th.click(); th.click(); }
  var out = {errors: window.__errors, plots: [], tables: document.querySelectorAll('table').length};
  var svgs = document.querySelectorAll('figure.plot svg');
  for (var i = 0; i < svgs.length; i++) { var r = svgs[i].getBoundingClientRect(); out.plots.push([r.width, r.height]); }
  var pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium not found (Debian: apt-get install -y chromium); the browser check is skipped")


def _run(chrome: str, url: str, profile) -> subprocess.CompletedProcess:
    return subprocess.run([chrome, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.browser
def test_report_opens_in_headless_chromium_without_errors(tmp_path):
    chrome = _chromium()
    from test_report import make_db

    make_db(tmp_path)
    (html_path,) = write_report(tmp_path, tmp_path / "report.html")
    # 1. the report itself: Chromium logs page console messages to stderr as "CONSOLE(...)"
    plain = _run(chrome, html_path.resolve().as_uri(), tmp_path / "profile1")
    assert plain.returncode == 0, plain.stderr[-2000:]
    console = [line for line in plain.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    assert "robustlab benchmark report" in plain.stdout
    # 2. a copy with a probe script: layout sizes of every plot, JS errors, sorting exercised
    probed = tmp_path / "probed.html"
    probed.write_text(html_path.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    res = _run(chrome, probed.resolve().as_uri(), tmp_path / "profile2")
    m = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout, re.S)
    assert m, res.stderr[-2000:]
    probe = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["errors"] == []
    assert len(probe["plots"]) == 7
    assert all(w > 100 and h > 100 for w, h in probe["plots"]), probe["plots"]
    assert probe["tables"] >= 3
