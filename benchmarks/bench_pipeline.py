"""Time the whole pipeline, stage by stage, at one or more customer counts (and optionally the test suite).

    python benchmarks/bench_pipeline.py [--config PATH] [--scale N ...] [--artifacts DIR] [--tests] [--record]

Runs the five numbered scripts one after another with ``--force`` into a
fresh artifacts folder, each in a child process exactly as a user would
(``python 02_prepare_features.py``), then runs them again with everything up
to date (the rerun that must skip in seconds). For each stage it reports the
child's wall time (imports included), the stage's own duration from its
manifest, CPU seconds and peak memory (the child and its worker processes
together, sampled every 0.2 s; Linux, see benchmarks/common.py), and the
manifest's summary. ``--scale N`` sets ``data.n_customers`` in a copy of the
config (repeat it to see how each stage's cost grows: ``--scale 10000
--scale 100000 --scale 1000000``); without it the config is run as it is.
The load average before and after each chain is printed: on a shared
machine the wall times include other people's work. ``--artifacts`` keeps
the folders (one ``scale-N`` subfolder per scale) instead of a temporary
one. ``--tests`` also times ``python -m pytest``. ``--record`` appends the
result, with the machine it ran on, to ``benchmarks/RESULTS.md``.

Targets (issue 18): a million customers end to end in at most 10 minutes and
8 GB; the default config (10,000 customers) in at most 45 s; an up-to-date
rerun in at most 2 s per script; stage 02 at a million customers in at most
120 s, stage 05 in at most 30 s.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

# machine is imported from here by bench_customer_value.py too.
from common import load_average, load_text, machine, mib, record, run_child  # noqa: E402,F401
from core.framework import paths  # noqa: E402

TARGETS = {"chain_1m_seconds": 600.0, "chain_default_seconds": 45.0, "peak_gib": 8.0, "rerun_script_seconds": 2.0,
           "stage_02_1m_seconds": 120.0, "stage_05_1m_seconds": 30.0}


@dataclasses.dataclass
class StageRun:
    """One numbered script's run in a child process."""

    name: str
    wall_seconds: float
    stage_seconds: float
    cpu_seconds: float | None
    peak_mib: float | None
    summary: str


def scaled_config(config: Path, n_customers: int | None, folder: Path) -> Path:
    """``config`` itself, or a copy of its folder with ``data.n_customers`` set to ``n_customers``."""
    if n_customers is None:
        return config
    shutil.copytree(config.parent, folder, dirs_exist_ok=True)
    target = folder / config.name
    document = yaml.safe_load(target.read_text(encoding="utf-8"))
    document["data"]["n_customers"] = n_customers
    target.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return target


def run_scripts(config: Path, artifacts_dir: Path, force: bool) -> list[StageRun] | int:
    """Each numbered script in a child process; the runs, or the exit code of the first that failed."""
    runs = []
    for name in paths.STAGE_NAMES:
        command = [sys.executable, str(ROOT / f"{name}.py"), "--config", str(config), "--artifacts",
                   str(artifacts_dir), *(["--force"] if force else [])]
        child = run_child(command, tree=True)
        if child.exit_code != 0:
            print(f"{name}.py failed with exit code {child.exit_code}", file=sys.stderr)
            return child.exit_code
        manifest = json.loads((artifacts_dir / name / paths.MANIFEST).read_text(encoding="utf-8"))
        peak = child.peak_tree_rss_mib or child.peak_rss_mib
        runs.append(StageRun(name, child.wall_seconds, manifest["duration_seconds"], child.cpu_seconds, peak,
                             manifest["summary"]))
        print(f"{name}: {child.wall_seconds:.1f} s wall, {manifest['duration_seconds']:.1f} s in the stage, "
              f"{'n/a' if child.cpu_seconds is None else f'{child.cpu_seconds:.1f}'} CPU-s, peak {mib(peak)}",
              flush=True)  # as each stage ends: a long chain shows where it is
    return runs


def chain_report(label: str, config: Path, runs: list[StageRun], reruns: list[StageRun],
                 loads: tuple[str, str]) -> list[str]:
    """The Markdown lines of one chain: the totals, then one row per stage."""
    wall = sum(r.wall_seconds for r in runs)
    peaks = [r.peak_mib for r in runs if r.peak_mib is not None]
    peak = max(peaks) if peaks else None
    return [
        f"#### {label}",
        "",
        f"- Config: `{config.relative_to(ROOT) if config.is_relative_to(ROOT) else config}`; load average "
        f"(1 min) {loads[0]} before, {loads[1]} after (2 cores: above 2, other work shared the machine)",
        f"- Chain, script by script (child processes, imports included): **{wall:.1f} s** wall, "
        f"{sum(r.cpu_seconds or 0.0 for r in runs):.1f} CPU-s, peak memory {mib(peak)}",
        f"- Rerun with everything up to date, script by script: "
        f"{', '.join(f'{r.name[:2]} {r.wall_seconds:.1f} s ({_cpu(r)} CPU-s)' for r in reruns)} "
        f"(slowest **{max(r.wall_seconds for r in reruns):.1f} s**)",
        "",
        "| stage | wall s | stage s | CPU s | peak memory | summary |",
        "|---|---:|---:|---:|---:|---|",
        *[f"| {r.name} | {r.wall_seconds:.1f} | {r.stage_seconds:.1f} | {_cpu(r)} | {mib(r.peak_mib)} | "
          f"{r.summary} |"
          for r in runs],
        "",
    ]


def _cpu(run: StageRun) -> str:
    return "n/a" if run.cpu_seconds is None else f"{run.cpu_seconds:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=paths.DEFAULT_CONFIG)
    parser.add_argument("--scale", type=int, action="append", metavar="N",
                        help="customers (data.n_customers); repeat for several chains")
    parser.add_argument("--artifacts", type=Path, help="keep the artifacts here (default: a temporary folder)")
    parser.add_argument("--tests", action="store_true", help="also time the test suite")
    parser.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)

    scales = args.scale or [None]
    lines = [f"### Pipeline, {dt.date.today().isoformat()}", "", f"- Machine: {machine()}",
             f"- Command: `python benchmarks/bench_pipeline.py"
             f"{''.join(f' --scale {n}' for n in args.scale or [])}{' --tests' if args.tests else ''}`", ""]
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        root = args.artifacts or Path(tmp)
        for n in scales:
            folder = root / (f"scale-{n}" if n else "default")
            config = scaled_config(args.config, n, folder / "config")
            before = load_text(load_average())
            runs = run_scripts(config, folder / "artifacts", force=True)
            if isinstance(runs, int):
                return runs
            reruns = run_scripts(config, folder / "artifacts", force=False)
            if isinstance(reruns, int):
                return reruns
            label = f"{n:,} customers" if n else "the config as it is"
            lines += chain_report(label, config if n is None else args.config, runs, reruns,
                                  (before, load_text(load_average())))
            print("\n".join(lines[-(len(runs) + 8):]), flush=True)
    if args.tests:
        tests = run_child([sys.executable, "-m", "pytest", "-q"])
        lines += [f"- Test suite (`python -m pytest -q`): **{tests.wall_seconds:.1f} s**, exit code {tests.exit_code}",
                  ""]
    report = "\n".join(lines)
    print(report)
    if args.record:
        record(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
