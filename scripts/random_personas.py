"""Write a random persona set (a personas YAML file) for the generator: personas nobody tuned for.

    python scripts/random_personas.py --personas 12 --overlap 0.6 --seed 3 --output my/personas.yml
           [--spending-spread 0.5] [--frequency-spread 0.4] [--hierarchy config/hierarchy.yml]

The same arguments write the same file. Point a config's ``personas_file``
at it (a copy of ``config/`` with this file as ``personas.yml`` is easiest)
and run the pipeline; ``benchmarks/bench_persona_sets.py`` does that for
several sets. What each argument means: ``core/generate_data/random_personas.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.domain.hierarchy import load_hierarchy  # noqa: E402
from core.generate_data.personas import parse_persona_file  # noqa: E402
from core.generate_data.random_personas import PersonaSetSpec, draw_persona_set  # noqa: E402


def write_persona_set(spec: PersonaSetSpec, hierarchy_path: Path, output: Path) -> Path:
    """Draw the set, check it as stage 01 will, and write it with its spec in a header comment."""
    hierarchy = load_hierarchy(hierarchy_path)
    document = draw_persona_set(spec, hierarchy)
    parse_persona_file(document, str(output), hierarchy)  # the generator's own checks, before writing
    header = (f"# Random persona set drawn by scripts/random_personas.py: {spec.n_personas} personas, overlap "
              f"{spec.overlap}, spending spread {spec.spending_spread}, frequency spread {spec.frequency_spread}, "
              f"seed {spec.seed}.\n# Rerun: python scripts/random_personas.py --personas {spec.n_personas} "
              f"--overlap {spec.overlap} --spending-spread {spec.spending_spread} --frequency-spread "
              f"{spec.frequency_spread} --seed {spec.seed} --output {output.name}\n")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--personas", type=int, required=True, help="number of personas (2 to 100)")
    parser.add_argument("--overlap", type=float, default=0.3,
                        help="0 to below 1: share of department mix and classes the personas share")
    parser.add_argument("--spending-spread", type=float, default=0.5,
                        help="sd of log typical order value between personas (0 to 2)")
    parser.add_argument("--frequency-spread", type=float, default=0.4,
                        help="sd of log typical visits per month between personas (0 to 2)")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--hierarchy", type=Path, default=ROOT / "config" / "hierarchy.yml")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        spec = PersonaSetSpec(args.personas, args.overlap, args.spending_spread, args.frequency_spread, args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"wrote {write_persona_set(spec, args.hierarchy, args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
