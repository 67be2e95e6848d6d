"""Run many `royalty` command lines, each in its own child process, importing once.

Importing the CLI loads every command module (torch and diffusers for `train`), which
costs seconds; paying that for each of dozens of error cases would make the suite slow.
This runner imports `royalty.cli.app` once, then forks one child per command line. Each
child is a separate process running the real entry point `main()` with its own argv,
environment, stdout and stderr file descriptors and exit status — what a user's shell
would see — so the tests observe exactly what a subprocess per case would.

Protocol: a JSON list of {"args": [...], "env": {...}, "tty_stderr": bool} on stdin; a JSON list of
{"returncode", "stdout", "stderr"} on stdout.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import IO

from cli_child import run_main


def _run_child(args: list[str], env: dict[str, str], out_fd: int, err_fd: int, tty_stderr: bool = False) -> None:
    os.dup2(out_fd, 1)
    master = None
    if tty_stderr:  # stderr is a terminal, as when a person runs the command
        master, slave = os.openpty()
        os.dup2(slave, 2)
    else:
        os.dup2(err_fd, 2)
    os.environ.update(env)
    try:
        code = run_main(args)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    if master is not None:  # hand what the terminal showed back through the file
        os.set_blocking(master, False)
        while True:
            try:
                chunk = os.read(master, 65536)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            os.write(err_fd, chunk)
    os._exit(code)


def _warm_up() -> None:
    """Do once in the parent what every child would otherwise do first: lazy imports and
    first-use set-up (typer building the command tree, pyarrow's parquet reader)."""
    import contextlib
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from royalty.cli import app

    app._register_commands()
    with tempfile.TemporaryDirectory() as tmp:
        pq.write_table(pa.table({"x": [1.0]}), f"{tmp}/warm.parquet")
        pq.read_table(f"{tmp}/warm.parquet", columns=["x"])
    argv = sys.argv
    sys.argv = ["royalty", "schema", "payout"]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            app.main()
    finally:
        sys.argv = argv


def run_batch(cases: list[dict], parallel: int | None = None) -> list[dict]:
    _warm_up()  # the expensive imports, done once before forking
    parallel = parallel or os.cpu_count() or 1
    results: list[dict] = [{} for _ in cases]
    running: dict[int, tuple[int, IO[bytes], IO[bytes]]] = {}

    def reap() -> None:
        pid, status = os.wait()
        index, out, err = running.pop(pid)
        out.seek(0)
        err.seek(0)
        results[index] = {
            "returncode": os.waitstatus_to_exitcode(status),
            "stdout": out.read().decode("utf-8", "replace"),
            "stderr": err.read().decode("utf-8", "replace"),
        }
        out.close()
        err.close()

    for index, case in enumerate(cases):
        while len(running) >= parallel:
            reap()
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _run_child(case["args"], case.get("env", {}), out.fileno(), err.fileno(), case.get("tty_stderr", False))
        running[pid] = (index, out, err)
    while running:
        reap()
    return results


if __name__ == "__main__":
    json.dump(run_batch(json.load(sys.stdin)), sys.stdout)
