"""Random persona sets (core/generate_data/random_personas.py and scripts/random_personas.py)."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest

from core.domain.hierarchy import load_hierarchy
from core.framework import paths
from core.generate_data.personas import load_persona_file, parse_persona_file
from core.generate_data.random_personas import PersonaSetSpec, draw_persona_set

HIERARCHY = load_hierarchy(paths.REPO_ROOT / "config" / "hierarchy.yml")


def spec(**changes) -> PersonaSetSpec:
    values = {"n_personas": 10, "overlap": 0.3, "spending_spread": 0.5, "frequency_spread": 0.4, "seed": 5}
    return PersonaSetSpec(**{**values, **changes})


def mean_distance(document: dict) -> float:
    """Mean total-variation distance between the personas' department mixes."""
    mixes = [p["department_preferences"] for p in document["personas"].values()]
    departments = sorted(set().union(*mixes))
    vectors = [np.array([m.get(d, 0.0) for d in departments]) for m in mixes]
    return float(np.mean([0.5 * np.abs(a - b).sum() for a, b in itertools.combinations(vectors, 2)]))


@pytest.mark.parametrize("n", [2, 6, 16, 40])
def test_a_drawn_set_is_a_valid_personas_file_with_that_many_personas(n):
    document = draw_persona_set(spec(n_personas=n), HIERARCHY)
    personas, scenarios = parse_persona_file(document, "drawn", HIERARCHY)  # raises on any problem
    assert len(personas) == n and set(scenarios) == {"january_sales", "summer_sale"}
    assert sum(p.weight for p in personas.values()) == pytest.approx(1.0, abs=1e-9)
    assert min(p.weight for p in personas.values()) >= 0.4 / n - 1e-4, "no persona of a handful of customers"


def test_the_same_spec_draws_the_same_set_and_another_seed_another():
    assert draw_persona_set(spec(), HIERARCHY) == draw_persona_set(spec(), HIERARCHY)
    assert draw_persona_set(spec(), HIERARCHY) != draw_persona_set(spec(seed=6), HIERARCHY)


def test_overlap_brings_the_department_mixes_together():
    apart = np.mean([mean_distance(draw_persona_set(spec(overlap=0.0, seed=s), HIERARCHY)) for s in range(5)])
    close = np.mean([mean_distance(draw_persona_set(spec(overlap=0.7, seed=s), HIERARCHY)) for s in range(5)])
    # Each mix is (1 - overlap) own + overlap common, so distances shrink by about (1 - overlap).
    assert close < 0.45 * apart and apart > 0.5


def test_no_spread_means_every_persona_spends_and_visits_alike():
    document = draw_persona_set(spec(spending_spread=0.0, frequency_spread=0.0), HIERARCHY)
    values = {tuple(p["spending_profile"]["avg_order_value"]) for p in document["personas"].values()}
    visits = {tuple(p["spending_profile"]["frequency_per_month"]) for p in document["personas"].values()}
    assert values == {(52.5, 91.0)} and visits == {(1.4, 2.8)}
    spread = draw_persona_set(spec(spending_spread=1.0), HIERARCHY)
    assert len({tuple(p["spending_profile"]["avg_order_value"]) for p in spread["personas"].values()}) == 10


@pytest.mark.parametrize("changes, message", [({"n_personas": 1}, "n_personas"), ({"overlap": 1.0}, "overlap"),
                                              ({"spending_spread": -0.1}, "spending_spread")])
def test_impossible_specs_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        spec(**changes)


def test_the_script_writes_a_file_stage_01_accepts(tmp_path):
    output = tmp_path / "personas.yml"
    command = [sys.executable, str(paths.REPO_ROOT / "scripts" / "random_personas.py"), "--personas", "7",
               "--overlap", "0.6", "--seed", "3", "--output", str(output)]
    subprocess.run(command, check=True, capture_output=True, cwd=tmp_path)
    personas, _ = load_persona_file(output, HIERARCHY)
    assert len(personas) == 7 and "--overlap 0.6" in output.read_text(encoding="utf-8").splitlines()[1]
    first = output.read_bytes()
    subprocess.run(command, check=True, capture_output=True, cwd=tmp_path)
    assert output.read_bytes() == first
    refused = subprocess.run(command[:-2] + ["--output", str(output), "--overlap", "1.5"], capture_output=True,
                             text=True, cwd=tmp_path)
    assert refused.returncode == 2 and "overlap must be" in refused.stderr
