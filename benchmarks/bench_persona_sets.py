"""Segment quality on persona sets nobody tuned for: stages 01-04 on random persona sets (issue 13, item 4).

    python benchmarks/bench_persona_sets.py [--customers 5000] [--workdir DIR] [--sets report|tuning|all]
                                            [--shipped] [--record]

Each persona set is drawn by ``scripts/random_personas.py`` (seeded; the
table below lists every set's arguments, so anyone can redraw it). For each,
the script copies ``config/`` to ``<workdir>/<set>/config`` with that
personas file and ``data.n_customers`` set to ``--customers``, runs stages
01 to 04 through the runner in child processes (stages already up to date in
``<workdir>`` are not rerun; stage 04 always is), and reads stage 04's
``comparison.json``. Per set it reports:

- the supervised reference (a cross-validated classifier's ARI against the
  persona on the model matrix: what the features allow);
- the **delivered** primary (``cluster.primary: auto``, chosen without the
  ground truth, as on real data): its ARI over the reference, its stability
  (lower of reseeds and subsamples), its number of segments against the
  number of personas;
- the best of every method and space (ten with the sharpened k-means) **picked afterwards with the
  persona**: an upper bound no user without a ground truth could choose;
- HDBSCAN's noise before reassignment in the latent and raw spaces.

Targets: the delivered (label-free) primary at least 0.8 of the reference on
the median set and 0.7 on every set; HDBSCAN latent noise at most 15% and
primary stability at least 0.9 on every set. ``--shipped`` adds the shipped
config (``config/config.yml`` as it is, its own number of customers).

The **tuning** sets are the ones settings were chosen on while developing;
the **report** sets were drawn afterwards and used only to measure (see
docs/decisions.md, "Persona sets nobody tuned for"). ``--record`` appends the
report to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "scripts")]

from common import load_average, load_text, machine, record, run_child  # noqa: E402
from random_personas import write_persona_set  # noqa: E402

from core.framework import paths  # noqa: E402
from core.generate_data.random_personas import PersonaSetSpec  # noqa: E402

TARGETS = {"median_ratio": 0.8, "every_ratio": 0.7, "latent_noise": 0.15, "stability": 0.9}

# Settings were chosen on these (never on the report sets).
TUNING_SETS = {
    "tune-a": PersonaSetSpec(n_personas=8, overlap=0.4, spending_spread=0.5, frequency_spread=0.4, seed=201),
    "tune-b": PersonaSetSpec(n_personas=14, overlap=0.6, spending_spread=0.4, frequency_spread=0.3, seed=202),
    # Added in the second round (cluster counts, fuzzifier, primary floor), drawn before any report set was rerun.
    "tune-c": PersonaSetSpec(n_personas=11, overlap=0.5, spending_spread=0.5, frequency_spread=0.4, seed=203),
    # Added in the fifth round (helper q13): strongly overlapping sets, drawn before any report set was rerun.
    "tune-d": PersonaSetSpec(n_personas=12, overlap=0.7, spending_spread=0.4, frequency_spread=0.3, seed=204),
    "tune-e": PersonaSetSpec(n_personas=9, overlap=0.7, spending_spread=0.3, frequency_spread=0.3, seed=205),
}
# Drawn once the settings were fixed; only measured.
REPORT_SETS = {
    "set-1": PersonaSetSpec(n_personas=6, overlap=0.2, spending_spread=0.5, frequency_spread=0.4, seed=101),
    "set-2": PersonaSetSpec(n_personas=8, overlap=0.5, spending_spread=0.5, frequency_spread=0.4, seed=102),
    "set-3": PersonaSetSpec(n_personas=10, overlap=0.7, spending_spread=0.3, frequency_spread=0.3, seed=103),
    "set-4": PersonaSetSpec(n_personas=12, overlap=0.3, spending_spread=0.6, frequency_spread=0.5, seed=104),
    "set-5": PersonaSetSpec(n_personas=14, overlap=0.7, spending_spread=0.4, frequency_spread=0.3, seed=105),
    "set-6": PersonaSetSpec(n_personas=16, overlap=0.5, spending_spread=0.5, frequency_spread=0.4, seed=106),
}


def prepare_config(name: str, spec: PersonaSetSpec | None, customers: int | None, workdir: Path) -> Path:
    """``<workdir>/<name>/config``: a copy of config/ with the set's personas and size (unchanged if the same)."""
    folder = workdir / name / "config"
    folder.mkdir(parents=True, exist_ok=True)
    for stem in ("config", "hierarchy", "strategies") + (("personas",) if spec is None else ()):
        source = (ROOT / "config" / f"{stem}.yml").read_text(encoding="utf-8")
        target = folder / f"{stem}.yml"
        if stem == "config" and customers is not None:
            document = yaml.safe_load(source)
            document["data"]["n_customers"] = customers
            source = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
        if not target.exists() or target.read_text(encoding="utf-8") != source:
            target.write_text(source, encoding="utf-8")
    if spec is not None:
        drawn = folder / "personas.drawn.yml"
        write_persona_set(spec, ROOT / "config" / "hierarchy.yml", drawn)
        target = folder / "personas.yml"
        if not target.exists() or target.read_bytes() != drawn.read_bytes():
            shutil.copy(drawn, target)  # a rewrite only when the draw changed, so the runner's hashes hold
        drawn.unlink()
    return folder / "config.yml"


def run_set(config: Path, artifacts: Path) -> float:
    """Stages 01-03 brought up to date, stage 04 rerun; returns stage 04's own seconds."""
    for stage in ("1", "2", "3", "4"):
        extra = ("--force",) if stage == "4" else ()
        run = run_child([sys.executable, "-m", "core.pipeline", "run", "--only", stage, *extra,
                         "--config", str(config), "--artifacts", str(artifacts)])
        if run.exit_code != 0:
            raise SystemExit(f"stage {stage} failed for {config} (exit code {run.exit_code}); see "
                             f"{artifacts / 'pipeline.log'}")
    manifest = json.loads((artifacts / paths.CLUSTER / paths.MANIFEST).read_text(encoding="utf-8"))
    return float(manifest["duration_seconds"])


def measure(name: str, spec: PersonaSetSpec | None, artifacts: Path, seconds: float) -> dict:
    """One row of the report from the set's comparison.json."""
    document = json.loads((artifacts / paths.CLUSTER / paths.COMPARISON_JSON).read_text(encoding="utf-8"))
    rows = {(r["method"], r["space"]): r for r in document["methods"]}
    primary = document["primary"]
    delivered = rows[(primary["method"], primary["space"])]
    free = document["label_free_primary"]
    best = document["best_afterwards"]
    personas = yaml.safe_load((artifacts.parent / "config" / "personas.yml").read_text(encoding="utf-8"))
    hdbscan = {s: rows.get(("hdbscan", s), {}).get("noise_ratio") for s in ("latent", "raw")}
    return {
        "set": name, "spec": None if spec is None else dataclasses.asdict(spec),
        "personas": len(personas["personas"]),
        "customers": json.loads((artifacts / paths.CLUSTER / paths.MANIFEST).read_text())["details"]["customers"],
        "reference_ari": document["supervised_reference"]["raw"]["ari"],
        "primary": f"{primary['method']} {primary['space']}", "primary_ratio": delivered["ari_to_reference"],
        "label_free": f"{free['method']} {free['space']}", "label_free_ratio": free["ari_to_reference"],
        "primary_stability": min(delivered["stability_reseed"], delivered["stability_bootstrap"]),
        "segments": delivered["clusters"],
        "best": f"{best['method']} {best['space']}", "best_ratio": best["ari_to_reference"],
        "noise_latent": hdbscan["latent"], "noise_raw": hdbscan["raw"],
        "hdbscan_latent_clusters": rows.get(("hdbscan", "latent"), {}).get("clusters"),
        "stage04_seconds": seconds,
        "clusters": {f"{m}_{s}": r["clusters"] for (m, s), r in rows.items()},
        "ratios": {f"{m}_{s}": r["ari_to_reference"] for (m, s), r in rows.items()},
    }


def report(results: list[dict], customers: int, command: str, started: float | None) -> str:
    """The Markdown table, the targets and what each set is (``started`` None: rows from files, no run timed)."""
    took = (f"{time.perf_counter() - started:.0f} s in all" if started is not None
            else "times in the runs' own logs; stage 04's per set below")
    lines = [f"### Persona sets nobody tuned for, {dt.date.today().isoformat()}", "",
             f"- Machine: {machine()}; load average (1 min) at the end {load_text(load_average())}",
             f"- Command: `{command}` ({customers:,} customers per random set; stages 01-04 per set, {took})", "",
             "| set | personas | overlap | spend / freq spread | seed | reference ARI | delivered primary "
             "(label-free) | its ARI / reference | its stability | segments | best of all methods picked afterwards "
             "with the persona | its ARI / reference | HDBSCAN noise latent | raw | stage 04 s |",
             "|---|---:|---:|---|---:|---:|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in results:
        spec = r["spec"]
        shape = ((f"{spec['overlap']}", f"{spec['spending_spread']} / {spec['frequency_spread']}", f"{spec['seed']}")
                 if spec else ("shipped", "shipped", "config seed"))
        lines.append(f"| {r['set']} | {r['personas']} | {shape[0]} | {shape[1]} | {shape[2]} | "
                     f"{r['reference_ari']:.3f} | {r['label_free']} | {r['label_free_ratio']:.3f} | "
                     f"{r['primary_stability']:.3f} | {r['segments']} | {r['best']} | {r['best_ratio']:.3f} | "
                     f"{r['noise_latent']:.1%} | {r['noise_raw']:.1%} | {r['stage04_seconds']:.1f} |")
    random_sets = [r for r in results if r["spec"] is not None]
    ratios = [r["label_free_ratio"] for r in random_sets]
    checks = []
    if ratios:
        checks.append(("label-free primary / reference, median of the random sets", statistics.median(ratios),
                       TARGETS["median_ratio"], ">="))
        checks.append(("label-free primary / reference, worst random set", min(ratios), TARGETS["every_ratio"], ">="))
    checks += [(f"label-free primary / reference, {r['set']}", r["label_free_ratio"], TARGETS["every_ratio"], ">=")
               for r in results if r["spec"] is None]
    checks.append(("HDBSCAN latent noise, worst set", max(r["noise_latent"] for r in results),
                   TARGETS["latent_noise"], "<="))
    checks.append(("primary stability, worst set", min(r["primary_stability"] for r in results),
                   TARGETS["stability"], ">="))
    lines += ["", "| target | measured | wanted | met |", "|---|---:|---|---|"]
    for label, value, limit, op in checks:
        met = value >= limit if op == ">=" else value <= limit
        lines.append(f"| {label} | {value:.3f} | {op} {limit} | {'yes' if met else '**no**'} |")
    lines += ["", "Each set's ARI over the reference, per method and space (delivered primary in bold):", "",
              "| set | " + " | ".join(results[0]["ratios"]) + " |", "|---|" + "---:|" * len(results[0]["ratios"])]
    for r in results:
        chosen = r["primary"].replace(" ", "_")
        cells = [(f"**{v:.3f}** ({r['clusters'][k]})" if k == chosen else f"{v:.3f} ({r['clusters'][k]})")
                 for k, v in r["ratios"].items()]
        lines.append(f"| {r['set']} | " + " | ".join(cells) + " |")
    lines += ["", "(number of segments in brackets)"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=5000, help="customers per random set")
    parser.add_argument("--workdir", type=Path, default=ROOT / "artifacts" / "persona_sets",
                        help="configs and artifacts per set (kept: reruns skip stages already up to date)")
    parser.add_argument("--sets", choices=("report", "tuning", "all"), default="report")
    parser.add_argument("--only", nargs="*", default=None, help="names of sets to run (default: all chosen)")
    parser.add_argument("--shipped", action="store_true", help="also the shipped config as it is")
    parser.add_argument("--record", action="store_true", help="append the report to benchmarks/RESULTS.md")
    parser.add_argument("--json", type=Path, help="also write the per-set figures to this file")
    parser.add_argument("--from-json", type=Path, nargs="+",
                        help="run nothing: one report from the --json files of runs made side by side")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.from_json:
        results = [row for path in args.from_json for row in json.loads(path.read_text(encoding="utf-8"))]
        command = (f"python benchmarks/bench_persona_sets.py --customers {args.customers} --only ... --json ..., "
                   f"{len(args.from_json)} run(s), then --from-json")
        text = report(results, args.customers, command, None)
        print(text)
        if args.record:
            record(text)
        return 0
    chosen = {"report": REPORT_SETS, "tuning": TUNING_SETS, "all": {**TUNING_SETS, **REPORT_SETS}}[args.sets]
    todo: list[tuple[str, PersonaSetSpec | None]] = [(n, s) for n, s in chosen.items()
                                                     if args.only is None or n in args.only]
    if args.shipped:
        todo.append(("shipped", None))
    results = []
    for name, spec in todo:
        config = prepare_config(name, spec, args.customers if spec is not None else None, args.workdir)
        artifacts = args.workdir / name / "artifacts"
        seconds = run_set(config, artifacts)
        results.append(measure(name, spec, artifacts, seconds))
        row = results[-1]
        print(f"{name}: {row['personas']} personas, reference {row['reference_ari']:.3f}, delivered "
              f"{row['label_free']} {row['label_free_ratio']:.3f} ({row['segments']} segments, stability "
              f"{row['primary_stability']:.3f}), best {row['best']} {row['best_ratio']:.3f}, HDBSCAN noise "
              f"{row['noise_latent']:.1%} latent / {row['noise_raw']:.1%} raw", flush=True)
    command = ("python benchmarks/bench_persona_sets.py" + (f" --customers {args.customers}")
               + (f" --sets {args.sets}" if args.sets != "report" else "") + (" --shipped" if args.shipped else ""))
    text = report(results, args.customers, command, started)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    if args.record:
        record(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
