"""Tiny owner-tagged image folders for the train tests, drawn with PIL.

Each owner has a style (a palette and a stroke), each concept a shape, so the data
mirrors sample_data at 16 px and trains in seconds.
"""

from __future__ import annotations

import atexit
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

STYLES = {"ann": ((200, 40, 40), 1), "bob": ((40, 40, 200), 3)}
CONCEPTS = ("circle", "square", "cross", "bar")


def draw(concept: str, owner: str, size: int = 16) -> Image.Image:
    colour, width = STYLES[owner]
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    box = (3, 3, size - 4, size - 4)
    if concept == "circle":
        d.ellipse(box, outline=colour, width=width)
    elif concept == "square":
        d.rectangle(box, outline=colour, width=width)
    elif concept == "cross":
        d.line((3, 3, size - 4, size - 4), fill=colour, width=width)
        d.line((3, size - 4, size - 4, 3), fill=colour, width=width)
    else:
        d.rectangle((3, size // 2 - width, size - 4, size // 2 + width), fill=colour)
    return img


def make_data(root: Path, concepts: tuple[str, ...] = CONCEPTS[:3]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for owner in STYLES:
        for concept in concepts:
            name = f"{owner}_{concept}.png"
            draw(concept, owner).save(root / name)
            rows.append({"file_name": name, "owner": owner, "caption": concept, "license": "CC0-1.0"})
    with open(root / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def make_targets(root: Path, concept: str = CONCEPTS[3]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "metadata.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file_name", "target_id", "owner"])
        for owner in STYLES:
            draw(concept, owner).save(root / f"{owner}.png")
            writer.writerow([f"{owner}.png", f"{concept}-{owner}", owner])
    return root


def make_folders(root: Path) -> tuple[Path, Path]:
    """A train folder and a targets folder under `root`: the pair most run tests use."""
    return make_data(root / "train"), make_targets(root / "targets")


def royalty(
    *args: str | os.PathLike, check: bool = False, threads: int | None = None, fresh: bool = False,
    cwd: str | os.PathLike | None = None, timeout: float | None = None,
) -> subprocess.CompletedProcess:
    """Run the real CLI in a process of its own (`threads`: its OMP_NUM_THREADS, else the caller's).

    The process is a child of the warm CLI server (cli_server.py): `main()` with its own
    argv, environment, working directory, stdout, stderr and exit status, minus the
    seconds of importing torch and diffusers. `fresh`, an environment other than the
    server's (another thread count: torch reads it once, when it loads), or
    ROYALTY_TEST_FRESH=1: a new `python -m royalty.cli` interpreter instead, for what
    only a fresh one shows (a process that starts with that thread count, the module
    entry point itself).
    """
    env = {**os.environ, "NO_COLOR": "1"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = None
    if not fresh and os.environ.get("ROYALTY_TEST_FRESH") != "1":
        proc = _SERVER.run([str(a) for a in args], env, os.fspath(cwd) if cwd is not None else os.getcwd(), timeout)
    if proc is None:
        proc = subprocess.run(
            [sys.executable, "-m", "royalty.cli", *map(str, args)], capture_output=True, text=True, env=env,
            cwd=cwd, timeout=timeout,
        )
    if check and proc.returncode != 0:
        raise AssertionError(f"royalty {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}")
    return proc


class _CliServer:
    """This test process's cli_server.py, started on first use, ended with the process.

    It starts with royalty()'s default environment (this process's, NO_COLOR=1). Its
    children differ from a fresh interpreter only in what was imported before the fork,
    so a command line with another environment is not its to run: what a module read
    when it was imported (torch: its thread count) may differ.
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._env: dict[str, str] | None = None
        self.served = 0  # command lines run as its children

    def _start(self, env: dict[str, str]) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("cli_server.py"))],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8", env=env,
            )
            self._env = dict(env)
            ready = self._proc.stdout.readline()
            if not ready:
                raise AssertionError(f"the CLI server did not start (exit {self._proc.wait()})")
            atexit.register(self._stop, self._proc)
        return self._proc

    @staticmethod
    def _stop(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    def run(
        self, args: list[str], env: dict[str, str], cwd: str, timeout: float | None
    ) -> subprocess.CompletedProcess | None:
        """`royalty ARGS` in a child of the server; None where `env` is not the server's."""
        own = self._env if self._env is not None else {**os.environ, "NO_COLOR": "1"}  # royalty()'s default
        if _settled(env) != _settled(own):
            return None
        proc = self._start(env)
        proc.stdin.write(json.dumps({"args": args, "env": env, "cwd": cwd, "timeout": timeout}) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"the CLI server died (exit {proc.wait()})")
        reply = json.loads(line)
        self.served += 1
        cmd = [sys.executable, "-m", "royalty.cli", *args]
        if reply["timed_out"]:
            raise subprocess.TimeoutExpired(cmd, timeout, reply["stdout"], reply["stderr"])
        return subprocess.CompletedProcess(cmd, reply["returncode"], reply["stdout"], reply["stderr"])


def _settled(env: dict[str, str]) -> dict[str, str]:
    """`env` but for what pytest changes with every test (the child gets it all the same)."""
    return {k: v for k, v in env.items() if k != "PYTEST_CURRENT_TEST"}


_SERVER = _CliServer()


TINY = ("--resolution", "16", "--batch-size", "3", "--timestep-draws", "2", "--lr", "0.05", "--quiet")


# A train test's folders and its one-step run, and how it checks a refusal.
@pytest.fixture
def data(tmp_path) -> Path:
    return make_data(tmp_path / "train")


@pytest.fixture
def targets(tmp_path) -> Path:
    return make_targets(tmp_path / "targets")


def train(data, targets, out, *extra):
    return royalty("train", data, "--targets", targets, "--out", out, "--steps", "1", *TINY, *extra)


def assert_fails(proc, code: int, *needles: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == ""
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
