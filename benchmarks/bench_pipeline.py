"""Time the whole pipeline (and optionally the test suite) on this machine.

    python benchmarks/bench_pipeline.py [--config PATH] [--tests] [--record]

Runs every stage with ``--force`` into a fresh temporary artifacts folder, in
a child process exactly as a user would (``python -m core.pipeline run``),
then reads each stage's duration from its manifest. ``--tests`` also times
``python -m pytest``. Peak memory is the child's maximum resident set size
(with the descendants it waited for; Linux and macOS, not measured on
Windows: see benchmarks/common.py). ``--record`` appends the result, with
the machine it ran on, to ``benchmarks/RESULTS.md``.

Targets (issue "five-stage chain"): default config (10,000 customers) end to
end in under 2 minutes; test suite in under 5 minutes; 2-core machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

# machine is imported from here by bench_customer_value.py too.
from common import machine, mib, record, run_child  # noqa: E402,F401
from core.framework import paths  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=paths.DEFAULT_CONFIG)
    parser.add_argument("--tests", action="store_true", help="also time the test suite")
    parser.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        artifacts_dir = Path(tmp) / "artifacts"
        command = [sys.executable, "-m", "core.pipeline", "run", "--force", "--config", str(args.config),
                   "--artifacts", str(artifacts_dir)]
        run = run_child(command)
        if run.exit_code != 0:
            print(f"pipeline failed with exit code {run.exit_code}", file=sys.stderr)
            return run.exit_code
        stages = {}
        for name in paths.STAGE_NAMES:
            manifest = json.loads((artifacts_dir / name / paths.MANIFEST).read_text(encoding="utf-8"))
            stages[name] = (manifest["duration_seconds"], manifest["summary"])
    lines = [
        f"### Pipeline, {dt.date.today().isoformat()}",
        "",
        f"- Machine: {machine()}",
        f"- Command: `python benchmarks/bench_pipeline.py{' --tests' if args.tests else ''}` "
        f"(config `{args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config}`)",
        f"- End to end (child process, imports included): **{run.wall_seconds:.1f} s**, "
        f"peak memory {mib(run.peak_rss_mib)}",
        "",
        "| stage | seconds | summary |",
        "|---|---:|---|",
        *[f"| {name} | {secs:.1f} | {summary} |" for name, (secs, summary) in stages.items()],
    ]
    if args.tests:
        tests = run_child([sys.executable, "-m", "pytest", "-q"])
        lines += ["", f"- Test suite (`python -m pytest -q`): **{tests.wall_seconds:.1f} s**, "
                      f"exit code {tests.exit_code}"]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.record:
        record(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
