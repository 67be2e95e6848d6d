"""Helpers for the report tests: run the CLI, edit copies of a run folder consistently,
and open a page in headless Chromium.

Edits go through the manifest (new sha256 recorded) so the copy is a *valid* run with
different contents — e.g. a run without value_specific, or one whose target loss was
not measured — rather than a tampered one; tampering is done separately, on purpose.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from royalty.atomic import sha256_file
from train_fixtures import royalty

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

# Appended to a copy of a page: after load, records which <img> failed to decode.
IMAGE_PROBE = """
<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 40));
  const out = document.createElement("pre");
  out.id = "image-probe";
  out.textContent = JSON.stringify({total: imgs.length, bad: bad, svgs: document.querySelectorAll("svg").length});
  document.body.appendChild(out);
});
</script>
"""


def report(run: Path, out: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return royalty("report", run, "--out", out, "--quiet", *args, cwd=cwd)


def summary(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


def manifest(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def write_manifest(run: Path, doc: dict) -> None:
    (run / "run.json").write_text(json.dumps(doc, indent=2, sort_keys=True))


def rewrite_table(run: Path, name: str, table: pa.Table) -> None:
    """Replace an output table and record its new hash, as a genuine run would have."""
    pq.write_table(table, run / name)
    doc = manifest(run)
    doc["outputs"][name] = sha256_file(run / name)
    write_manifest(run, doc)


def chromium(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'chromium-profile'}", *args, page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def probe_images(page: Path, tmp: Path) -> dict:
    """Load a copy of `page` with IMAGE_PROBE in Chromium; return what the probe saw."""
    probed = tmp / f"probed-{page.name}"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", IMAGE_PROBE + "</body>"), encoding="utf-8")
    proc = chromium(probed, tmp, "--dump-dom", "--virtual-time-budget=10000")
    found = re.search(r'<pre id="image-probe">(.*?)</pre>', proc.stdout, re.DOTALL)
    assert found, f"the probe did not run (chromium exit {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
