"""Running `royalty ARGS` inside an already-started (forked) process, as the interpreter would."""

from __future__ import annotations

import sys
import traceback


def run_main(args: list[str]) -> int:
    """Call the real entry point with `args`; the exit status a shell would see."""
    sys.argv = ["royalty", *args]
    from royalty.cli.app import main

    try:
        main()
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)  # sys.exit("message"): printed, status 1
        return 1
    except BaseException:  # noqa: BLE001 - report as an interpreter would, then exit 1
        traceback.print_exc()
        return 1
    return 0
