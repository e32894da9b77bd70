"""Run the reliability cases of issue 10 and write their table (outcome, seconds, peak memory).

    .venv/bin/python benchmarks/reliability.py [--out benchmarks/results/reliability.md] [-k SUBSTRING]

Each case (``tests.reliability.cases.CASES``: the data-path cases; other lists can be added to
:data:`CASE_LISTS`) builds its input in a scratch folder, runs the real ``cardiomm-replay`` (or
whatever the case runs) in a child process and checks the expected outcome. Peak memory is the
child's ``ru_maxrss``. The table lists every case run, with "ok" or "FAILED: why"; the exit status
is 1 when a case failed. Timings are measurements, never assertions.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.reliability import cases as data_path_cases  # noqa: E402

#: (section title, cases) in table order; a new list of cases is one more entry here.
CASE_LISTS: list[tuple[str, list[data_path_cases.Case]]] = [
    ("Data path (items 1-4, 7, 8)", data_path_cases.CASES),
]

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "reliability.md"


def table(sections: Sequence[tuple[str, Sequence[data_path_cases.CaseResult], Sequence[data_path_cases.Case]]],
          command: str, seconds: float) -> str:
    lines = [
        "# Reliability cases (issue 10)",
        "",
        f"Command: `{command}` ({platform.machine()}, {platform.python_version()}, {seconds:.0f} s in all).",
        "Each case runs the real replay (`python -m gadgets.tools.replay`, chain `chains/cardiomm_cine_python.xml`,",
        "`--checkpoint none` unless the case says otherwise) in a child process on a real ISMRMRD file damaged",
        "as described; memory cases run under `RLIMIT_AS`. Peak memory: the child's `ru_maxrss`.",
        "",
        "The network, fault and configuration cases (items 5, 6, 10-13: hostile lengths, connection limits,",
        "the load test, a full disk, one-line errors, allowed checkpoint directories, exit codes) are in",
        "[reliability_network.md](reliability_network.md), from `benchmarks/reliability_network.py`.",
        "",
    ]
    for title, results, cases in sections:
        lines += [f"## {title}", "", "| case | item | input | outcome | s | peak MiB |", "|---|---|---|---|---:|---:|"]
        descriptions = {case.name: case.description for case in cases}
        for result in results:
            outcome = "ok: " + result.outcome if result.ok else result.outcome
            lines.append(f"| {result.name} | {result.item} | {descriptions.get(result.name, '')} | "
                         f"{outcome.replace('|', '/')} | {result.seconds:.1f} | {result.peak_rss_mb:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"table file (default {DEFAULT_OUT})")
    parser.add_argument("-k", dest="only", default="", help="run only cases whose name contains this text")
    args = parser.parse_args(argv)
    started = time.monotonic()
    sections = []
    failed = 0
    with tempfile.TemporaryDirectory(prefix="reliability-") as scratch:
        for title, cases in CASE_LISTS:
            chosen = [case for case in cases if args.only in case.name]
            results = []
            for number, case in enumerate(chosen, 1):
                result = data_path_cases.run_case(case, Path(scratch) / case.name)
                results.append(result)
                failed += not result.ok
                print(f"[{number}/{len(chosen)}] {case.name}: {'ok' if result.ok else result.outcome} "
                      f"({result.seconds:.1f} s, {result.peak_rss_mb:.0f} MiB)", file=sys.stderr)
            sections.append((title, results, chosen))
    command = "python benchmarks/reliability.py" + (f" -k {args.only}" if args.only else "")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table(sections, command, time.monotonic() - started) + "\n")
    print(f"wrote {args.out} ({failed} failed)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
