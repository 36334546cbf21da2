"""Stage 05 without its next-best classes: the seconds of each other part on a finished artifacts folder.

Issue 18 budgets stage 05's profiles, names, explanations, identifier check, migration, exports,
``customers_with_segments`` and report at 30 s for a million customers, apart from the next-best classes
(issue 15, their own budget). This runs the stage's own ``run`` with the next-best classes left out
(their fit returns no cross-sell lists and no evaluation, their write does nothing), so the parts the
stage logs (``05_profile_export took ... (inputs ..., class_spend ..., report ...)``) can be measured
when memory or time does not allow the whole stage. The outputs are written to the folder's stage 05
directory without a manifest: run the stage itself afterwards (``run --only 5 --force``).

    python benchmarks/bench_profile_parts.py --config CONFIG --artifacts DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import load_config  # noqa: E402
from core.framework.stage import StageContext  # noqa: E402
from core.profile_export import recommendation_outputs, stage  # noqa: E402


def upstream_inputs(artifacts: Path) -> list[dict]:
    """The input records the runner would give stage 05: each declared file with its upstream manifest's hash."""
    records = []
    for upstream, files in stage.STAGE.inputs.items():
        manifest = json.loads((artifacts / upstream / "manifest.json").read_text(encoding="utf-8"))
        hashes = {o["file"]: o["sha256"] for o in manifest["outputs"]}
        records += [{"stage": upstream, "file": f, "sha256": hashes[f]} for f in files]
    return records


def _without_next_best(ctx, customers, assignments, stop=None, lines=None):
    """No cross-sell lists and no evaluation; the order lines read through (the stage's spend by month and
    attribute is summed on that read)."""
    for _ in lines or ():
        pass
    return types.SimpleNamespace(cross_sell=None, document=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--artifacts", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = load_config(args.config)
    ctx = StageContext(stage=stage.STAGE, config=config, artifacts_dir=args.artifacts,
                       inputs=upstream_inputs(args.artifacts), config_hash="0" * 64)
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    # The next-best classes left out: no model cross-sell lists (the lift heuristic everywhere), no report section.
    recommendation_outputs.fit_recommendations = _without_next_best
    recommendation_outputs.write_recommendations = lambda *_: None
    started = time.perf_counter()
    stage.run(ctx)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"stage 05 without next-best classes: {time.perf_counter() - started:.1f} s, peak {peak:,.0f} MiB; "
          f"{ctx.summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
