"""payout and report read run folders and write statements and pages: they must work on a
machine (an accountant's, an auditor's) where importing torch is slow or impossible."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import importlib, pkgutil, sys
import royalty.payout, royalty.report, royalty.cli.payout, royalty.cli.report
for pkg in (royalty.payout, royalty.report):
    for m in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{m.name}")
heavy = sorted(name for name in ("torch", "diffusers") if name in sys.modules)
print(",".join(heavy))
"""


def test_payout_and_report_never_import_torch() -> None:
    # A fresh interpreter: this test process has long imported torch for other tests.
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == ""


ENGINE_PROBE = """
import importlib, pkgutil, sys
import royalty.attribution.engine as engine, royalty.attribution.engine.rules as rules
for pkg in (engine, rules):
    for m in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{m.name}")
import royalty.attribution.contract.run_folder, royalty.attribution.contract.attribution_folder
print("diffusers" in sys.modules)
"""


def test_the_engine_knows_no_diffusers() -> None:
    """The engine values any torch module: a diffusion model is the training side's business."""
    proc = subprocess.run([sys.executable, "-c", ENGINE_PROBE], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"
