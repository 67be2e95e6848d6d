"""A warm `royalty` for the tests: imports the CLI once, then forks one child per command line.

Starting `python -m royalty.cli` costs seconds before the command does anything (torch,
diffusers, pandas); a test file that runs dozens of command lines pays that dozens of
times, more than the commands themselves. This server pays it once per test worker.
Each command line still runs in a process of its own — a child forked from the warm
server — running the real entry point `main()` with its own argv, environment, working
directory, stdout and stderr file descriptors and exit status, as payout_cli_batch.py's
children do: what a user's shell would see. Nothing a command changes (torch's thread
count, RNG state, environment variables, warning filters) outlives its child.

The server itself never computes with torch: its OpenMP pool is never started, so each
child starts its own with the thread count the environment gave the server (the client
runs a real subprocess for any other count: see train_fixtures.royalty).

Protocol, one JSON document per line: the client writes {"args", "env", "cwd",
"timeout"}; the server answers {"returncode", "stdout", "stderr", "timed_out"}.
"""

from __future__ import annotations

import atexit
import json
import locale
import os
import sys
import tempfile
import time

from cli_child import run_main  # imported while this folder is still on sys.path (see __main__)


def _warm_up() -> None:
    """Import once, before any fork, what the commands import lazily."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from royalty.cli import app

    app._register_commands()
    import royalty.attribution.after.attribute  # noqa: F401
    import royalty.attribution.after.generate  # noqa: F401
    import royalty.attribution.audit.service  # noqa: F401
    import royalty.attribution.training.out_folder  # noqa: F401
    import royalty.attribution.training.trainer  # noqa: F401
    import royalty.cli.report  # noqa: F401

    with tempfile.TemporaryDirectory() as tmp:
        pq.write_table(pa.table({"x": [1.0]}), f"{tmp}/warm.parquet")
        pq.read_table(f"{tmp}/warm.parquet", columns=["x"])


def _child(args: list[str], env: dict[str, str], cwd: str | None, out_fd: int, err_fd: int) -> None:
    """In the forked child: become `royalty ARGS` run from a shell, then exit with its status."""
    code = 1
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.environ.clear()
        os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        code = run_main(args)
        atexit._run_exitfuncs()  # what the interpreter would run on its way out
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _run(request: dict) -> dict:
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(request["args"], request["env"], request.get("cwd"), out.fileno(), err.fileno())
    timeout = request.get("timeout")
    deadline = None if timeout is None else time.monotonic() + timeout
    timed_out = False
    while True:
        done, status = os.waitpid(pid, 0 if deadline is None else os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            _, status = os.waitpid(pid, 0)
            timed_out = True
            break
        time.sleep(0.02)
    result = {"returncode": os.waitstatus_to_exitcode(status), "timed_out": timed_out}
    encoding = locale.getpreferredencoding(False)
    for name, file in (("stdout", out), ("stderr", err)):
        file.seek(0)
        # as subprocess.run(text=True) reads a pipe: the locale's encoding, universal newlines
        result[name] = file.read().decode(encoding).replace("\r\n", "\n").replace("\r", "\n")
        file.close()
    return result


def serve() -> None:
    # the protocol keeps private copies of stdin/stdout; nothing printed can corrupt it
    requests = os.fdopen(os.dup(0), "r", encoding="utf-8")
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    _warm_up()
    replies.write(json.dumps({"ready": True}) + "\n")
    replies.flush()
    for line in requests:
        replies.write(json.dumps(_run(json.loads(line))) + "\n")
        replies.flush()


if __name__ == "__main__":
    # `python -m royalty.cli` has no tests folder on its path: neither do the children
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)
    serve()
