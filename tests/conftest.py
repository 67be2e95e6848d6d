import os
import sys
from pathlib import Path

# test helpers (engine_reference, engine_cases, ...) are plain modules beside the tests
sys.path.insert(0, str(Path(__file__).parent))

# Under pytest-xdist (the README's `-n auto`) the workers share the machine's cores: one
# OpenMP thread each, for the worker's own torch and for the CLI processes it starts,
# or each worker's threads wait for cores the other holds (3x slower, BENCHMARKS.md).
# A process that adopts a run's recorded count (2 threads: the thread-count tests) lets
# its idle threads sleep rather than spin on a core the other worker needs (2x faster
# there; the count, and so every result, is unchanged).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

# Hypothesis' per-example deadline measures the machine, not the code: on a busy 2-core
# box a first example that loads a module takes longer and is reported as flaky.
from hypothesis import settings  # noqa: E402

settings.register_profile("royalty", deadline=None)
settings.load_profile("royalty")
