"""royalty/allocator.py: glibc's thresholds raised where there is glibc, nothing elsewhere."""

from __future__ import annotations

import platform
import subprocess
import sys

from royalty.allocator import tune_cpu_allocator


def test_tuned_exactly_where_there_is_glibc() -> None:
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert tune_cpu_allocator() is glibc
    assert tune_cpu_allocator() is glibc  # again: idempotent


def test_the_cli_starts_with_it() -> None:
    # the CLI's entry point calls it before any command; a failure to tune is no error
    code = "import royalty.cli.app as app, royalty.allocator as a; print(a.tune_cpu_allocator.__name__ in app.main.__code__.co_names)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
