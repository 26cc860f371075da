"""report.html in a real browser: headless Chromium loads it, every image loads and every internal
link resolves. Skipped, with the reason shown, where no Chromium is installed (CI installs Debian's
`chromium`)."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import bnonly

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)

# Appended to a copy of the page: opens every fold, loads every image now (they are lazy), then
# writes what it found into the DOM that --dump-dom prints.
PROBE = """<script>
(function(){
  document.querySelectorAll("details").forEach(function(d){d.open = true;});
  var imgs = Array.from(document.images);
  imgs.forEach(function(i){i.loading = "eager";});
  var tries = 0;
  var timer = setInterval(function(){
    if (imgs.some(function(i){return !i.complete;}) && ++tries < 100) return;
    clearInterval(timer);
    var links = Array.from(document.querySelectorAll('a[href^="#"]'));
    var dead = links.filter(function(a){return !document.getElementById(decodeURIComponent(a.getAttribute("href").slice(1)));})
                    .map(function(a){return a.getAttribute("href");});
    var pre = document.createElement("pre"); pre.id = "probe";
    pre.textContent = JSON.stringify({
      images: imgs.length, links: links.length, dead: dead,
      failed: imgs.filter(function(i){return !(i.complete && i.naturalWidth > 0);}).map(function(i){return i.getAttribute("src");}),
      tables: document.querySelectorAll("table").length, captions: document.querySelectorAll("table > caption").length});
    document.body.appendChild(pre);
  }, 100);
})();
</script>"""


def probe(html: Path) -> dict:
    page = html.with_name("probe.html")
    page.write_text(html.read_text().replace("</body>", PROBE + "</body>"))
    out = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    m = re.search(r'<pre id="probe">(.*?)</pre>', out, re.S)
    assert m, "the probe did not run: " + out[-500:]
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))


@pytest.mark.skipif(BROWSER is None, reason="no headless browser: apt-get install chromium (CI does)")
def test_report_in_a_browser(tmp_path):
    out = tmp_path / "study"
    bnonly.sweep("quick", out, progress=False, models=["mlp", "lenet5"], widths=[16], depths=[1, 2],
                 trainable=["bn", "all", "random"], seeds=[0, 1], subset=1000, max_epochs=2)
    html = bnonly.report(out)
    text = html.read_text()
    # folded by default: the per-architecture figures of the analysis (one fold per architecture)
    assert len(re.findall(r'<details class="fold" id="[^"]+"><summary>Figures of', text)) == 3
    # the answer first: BN-only against random weights, its figure (with a caption) above the claims
    assert text.index('<img src="bn_vs_random.png"') < text.index('<section id="claims"')
    assert re.search(r'<img src="bn_vs_random.png"[^>]*></a><figcaption>Test accuracy of bn and random', text)
    r = probe(html)
    assert r["images"] >= 8 and r["failed"] == [], r  # figures of the study, questions and every fold
    assert r["links"] >= 8 and r["dead"] == [], r     # the table of contents resolves
    assert r["tables"] >= 4 and r["captions"] == r["tables"], r  # every table says what n and ± mean
    for href in re.findall(r'href="([^"#][^"]*)"', text):  # PNG and SVG links point at files
        assert (out / href).is_file(), href
