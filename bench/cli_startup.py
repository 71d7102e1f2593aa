"""CLI start-up benchmark: wall time and modules imported for `bastion COMMAND --help`.

    .venv/bin/python bench/cli_startup.py [--runs 7]

Each run is a fresh interpreter (`python -m gateway ...`), as an operator's shell starts it; the
median of the runs is printed with the min and max (a shared machine: read the spread). The module
count is how many entries ``sys.modules`` holds when the command has parsed its arguments: the
dispatcher loads only the command being run (issue #16 item 3). Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

COMMANDS = (
    ["--help"],
    ["serve", "--help"],
    ["audit", "verify", "--help"],
    ["policy", "lint", "--help"],
    ["model", "--help"],
    ["worker", "--help"],
)

_COUNT = (
    "import sys, atexit\n"
    "atexit.register(lambda: sys.__stderr__.write(f'MODULES {len(sys.modules)}\\n'))\n"
    "from gateway.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _time(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "gateway", *args], cwd=REPO, capture_output=True, check=False
    )
    return time.perf_counter() - started


def _modules(args: list[str]) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _COUNT, *args], cwd=REPO, capture_output=True, text=True, check=False
    )
    counts = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("MODULES ")]
    return int(counts[-1]) if counts else -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print(f"{'command':32} {'median s':>9} {'min s':>7} {'max s':>7} {'modules':>8}")
    for command in COMMANDS:
        _time(command)  # warm the file cache
        times = [_time(command) for _ in range(args.runs)]
        print(
            f"{'bastion ' + ' '.join(command):32} {statistics.median(times):9.3f} "
            f"{min(times):7.3f} {max(times):7.3f} {_modules(command):8d}"
        )


if __name__ == "__main__":
    main()
