"""Start-up time of the everyday commands against a bare interpreter.

    python bench/bench_startup.py [--runs 15]

Times, as wall clock of a fresh process each, `python -c pass` (the floor
every command pays) and `rcingest --version`, `rcingest --help` and
`rcingest validate config/pipeline.example.yaml`. The commands are
interleaved round by round, so a noisy minute on this shared machine hits
them all alike; the table gives the median and the minimum of the runs and
the median's ratio to `python -c pass`. Target: under 0.25 s each.

The commands run through the installed console script (the `rcingest` next
to this interpreter; else its entry point through `python -c`), from the
repository root so the example pipeline resolves.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 0.25
ENTRY = "from rcingest.cli import main; main()"


def commands() -> dict[str, list[str]]:
    script = Path(sys.executable).with_name("rcingest")
    # Without a console script (not installed), the same entry point.
    rc = [str(script)] if script.exists() else [sys.executable, "-c", ENTRY]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "rcingest --version": [*rc, "--version"],
        "rcingest --help": [*rc, "--help"],
        "rcingest validate config/pipeline.example.yaml": [
            *rc,
            "validate",
            "config/pipeline.example.yaml",
        ],
    }


def once(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=60, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    runs = max(1, min(args.runs, 200))  # bounded
    cmds = commands()
    times: dict[str, list[float]] = {label: [] for label in cmds}
    for argv in cmds.values():  # warm the file cache and .pyc files once
        once(argv)
    for _ in range(runs):
        for label, argv in cmds.items():
            times[label].append(once(argv))

    base = statistics.median(times["python -c pass"])
    print(f"{runs} runs each, interleaved; Python {sys.version.split()[0]}")
    print(f"| {'command':48s} | median s | min s | median / python -c pass | < {TARGET_S} s |")
    print(f"|{'-' * 50}|----------|-------|-------------------------|---------|")
    for label, values in times.items():
        med = statistics.median(values)
        met = "yes" if med < TARGET_S else "NO"
        print(f"| {label:48s} | {med:8.3f} | {min(values):5.3f} | {med / base:23.2f} | {met:7s} |")


if __name__ == "__main__":
    main()
