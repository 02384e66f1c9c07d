"""The report page (report.html): self-contained (no request leaves it), its tables and figures in one
file, opened in a real headless browser: no console message, every image decodes, the headline
table on the first screen. The commands that write one print where it lies (tests of run, compare,
grid and sweep)."""
import json
import re
import subprocess

import numpy as np

from conftest import browser as _browser
from harness.analysis import page, render
from harness.analysis.stats import SeedReport, Stat

# Test-only: written into a copy of the page, it reports what the browser made of it into the DOM.
CHECK = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const rows = document.querySelectorAll("table tr");
  document.body.setAttribute("data-check", JSON.stringify({
    images: imgs.length, decoded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    first_row_bottom: rows.length > 1 ? rows[1].getBoundingClientRect().bottom : -1, screen: window.innerHeight}));
});
</script>"""


def _report():
    rng = np.random.default_rng(0)
    stats = [Stat(label, list(0.85 + rng.normal(0, 0.01, 5)), list(0.86 + rng.normal(0, 0.01, 5)), pct)
             for label, pct in (("Accuracy", True), ("F1 (weighted)", False), ("F1 (macro)", False))]
    return SeedReport([str(i) for i in range(5)], stats, [(str(i), 10, 12, 0.5) for i in range(5)], True, [],
                      controlled=True, recipe=stats[:1], total=stats[:1])


def test_the_page_holds_its_tables_and_figures_and_fetches_nothing():
    report = _report()
    html = page.html("5 paired seeds", render.report_markdown(report), [("seeds", page.png(render.seed_figure(report)))])
    assert "<table>" in html and "<th>Metric</th>" in html and html.count("<img") == 1
    assert "data:image/png;base64," in html
    # Self-contained: no address a browser would fetch (links to elsewhere are not written).
    assert not re.search(r"""(src|href)=["'](?!data:)""", html)
    assert "Verdict" in html and "<script" not in html


def test_the_page_opens_in_chromium_without_errors(tmp_path):
    browser = _browser()
    report = _report()
    html = page.html("5 paired seeds: synthetic - control", render.report_markdown(report),
                     [("seeds", page.png(render.seed_figure(report))), ("also", page.png(render.seed_figure(report)))])
    checked = tmp_path / "report.html"
    checked.write_text(html.replace("</body>", CHECK + "</body>"))
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--window-size=1280,800",
           "--dump-dom", checked.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    found = re.search(r'data-check="([^"]+)"', done.stdout)
    assert found, done.stdout[-2000:] + done.stderr[-2000:]
    check = json.loads(found.group(1).replace("&quot;", '"'))
    assert check["images"] == 2 and check["decoded"] == 2
    assert 0 < check["first_row_bottom"] <= check["screen"]  # the headline table starts on the first screen
    assert not [line for line in done.stderr.splitlines() if ":CONSOLE" in line]  # the page logs nothing


def test_location_is_a_path_for_a_local_store_and_a_uri_otherwise():
    class Run:
        def __init__(self, uri):
            self.info = type("Info", (), {"artifact_uri": uri})()

    class Client:
        def __init__(self, uri):
            self.uri = uri

        def get_run(self, run_id):
            return Run(self.uri)
    assert page.location(Client("file:///tmp/my%20store/1/abc/artifacts"), "abc") == "/tmp/my store/1/abc/artifacts/report.html"
    assert page.location(Client("mlflow-artifacts:/1/abc/artifacts"), "abc") == "mlflow-artifacts:/1/abc/artifacts/report.html"
