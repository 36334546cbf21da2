"""Random persona sets: personas nobody tuned the pipeline for.

Every quality figure of the clustering stage used to come from the ten
personas of ``config/personas.yml``, with settings chosen on them. A persona
set drawn here is a valid personas file (same schema, checked by
:func:`core.generate_data.personas.parse_persona_file`) whose personas differ
in ways controlled by a few numbers, all seeded:

- ``n_personas``: how many;
- ``overlap`` (0 to 1): the share of each persona's department mix that is
  one mix common to the whole set, and the chance that each of its
  preferred classes is taken from a pool shared by every persona (so 0.7
  gives personas that buy mostly the same departments and classes);
- ``spending_spread`` and ``frequency_spread``: standard deviation of the
  logarithm of the personas' typical order value (around GBP 70) and visits
  per month (around 2); 0 makes every persona spend alike.

The rest (brand tiers, styles, online share, demographics, weights) is drawn
independently per persona. Use :func:`draw_persona_set` in code, or
``python scripts/random_personas.py`` to write a YAML file.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from core.domain.hierarchy import Hierarchy
from core.generate_data.settings import BRAND_TIERS

STYLES = ("casual", "classic", "formal", "sport", "trend")
# Typical order value (GBP) and visits per month of the median persona: those of the shipped personas.
TYPICAL_ORDER_VALUE = 70.0
TYPICAL_VISITS_PER_MONTH = 2.0
# A department with at least this share of a persona's lines gets a list of preferred classes.
CLASS_LEVEL_SHARE = 0.08
# Shares below this are dropped (a persona does not buy everything a little).
SMALLEST_SHARE = 0.02


@dataclasses.dataclass(frozen=True)
class PersonaSetSpec:
    """What a random persona set looks like (see the module docstring)."""

    n_personas: int
    overlap: float
    spending_spread: float
    frequency_spread: float
    seed: int

    def __post_init__(self):
        if not 2 <= self.n_personas <= 100:
            raise ValueError(f"n_personas must be 2 to 100, got {self.n_personas}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be at least 0 and below 1, got {self.overlap}")
        for name in ("spending_spread", "frequency_spread"):
            if not 0.0 <= getattr(self, name) <= 2.0:
                raise ValueError(f"{name} must be 0 to 2, got {getattr(self, name)}")


def draw_persona_set(spec: PersonaSetSpec, hierarchy: Hierarchy) -> dict:
    """A personas document (``{"personas": ..., "scenarios": ...}``) drawn from ``spec``.

    Same spec and hierarchy, same document. Shares and weights are rounded
    to four decimals and sum to exactly 1 (the remainder goes to the largest).

    Parameters
    ----------
    spec : PersonaSetSpec
    hierarchy : Hierarchy
        Departments of kind ``merchandise`` and their sellable classes are used.

    Returns
    -------
    dict
        Ready for ``yaml.safe_dump``; valid for :func:`core.generate_data.personas.parse_persona_file`.
    """
    rng = np.random.default_rng(spec.seed)
    departments = hierarchy.merchandise_departments
    if len(departments) < 3:
        raise ValueError(f"the hierarchy has {len(departments)} merchandise departments; at least 3 are needed")
    common = _sparse_mix(rng, departments, rng.integers(5, min(9, len(departments)) + 1))
    shared_classes = {d: list(rng.permutation(hierarchy.departments[d].classes)[:6]) for d in departments}
    weights = _round_shares(dict(zip(_names(spec.n_personas),
                                     _floored_weights(rng.dirichlet(np.full(spec.n_personas, 4.0)),
                                                      0.4 / spec.n_personas).tolist())))
    personas = {}
    for name in _names(spec.n_personas):
        own = _sparse_mix(rng, departments, rng.integers(3, min(7, len(departments)) + 1))
        mix = {d: (1 - spec.overlap) * own.get(d, 0.0) + spec.overlap * common.get(d, 0.0) for d in departments}
        mix = _round_shares({d: s for d, s in mix.items() if s >= SMALLEST_SHARE})
        personas[name] = _persona(rng, spec, hierarchy, weights[name], mix, shared_classes)
    everyone = list(personas)
    scenarios = {
        "january_sales": {"description": "Boxing Day and January sales: more visits, deep discounts",
                          "personas": everyone, "start": "12-26", "end": "01-31", "visit_multiplier": 1.25,
                          "discount_share": 0.5, "discount_depth": [0.2, 0.5]},
        "summer_sale": {"description": "Mid-season summer sale", "personas": everyone, "start": "06-25",
                        "end": "07-15", "visit_multiplier": 1.1, "discount_share": 0.35,
                        "discount_depth": [0.2, 0.4]},
    }
    return {"personas": personas, "scenarios": scenarios}


def _names(n: int) -> list[str]:
    return [f"persona_{i + 1:02d}" for i in range(n)]


def _sparse_mix(rng: np.random.Generator, departments: list[str], k: int) -> dict[str, float]:
    """Shares over ``k`` departments drawn at random (Dirichlet 1.5): a few lead, the rest trail."""
    chosen = rng.choice(len(departments), size=int(k), replace=False)
    shares = rng.dirichlet(np.full(len(chosen), 1.5))
    return {departments[i]: float(s) for i, s in zip(chosen, shares)}


def _floored_weights(weights: np.ndarray, floor: float) -> np.ndarray:
    """``weights`` with none below ``floor``, still summing to 1 (no persona of a handful of customers)."""
    weights = np.maximum(weights, floor)
    return weights / weights.sum()


def _round_shares(shares: dict[str, float], digits: int = 4) -> dict[str, float]:
    """Shares rescaled to sum to 1, rounded; the rounding remainder goes to the largest."""
    total = float(sum(shares.values()))
    rounded = {k: round(float(v) / total, digits) for k, v in shares.items()}
    largest = max(rounded, key=rounded.get)
    rounded[largest] = round(rounded[largest] + 1.0 - sum(rounded.values()), digits)
    return rounded


def _persona(rng: np.random.Generator, spec: PersonaSetSpec, hierarchy: Hierarchy, weight: float,
             mix: dict[str, float], shared_classes: dict[str, list[str]]) -> dict:
    classes = {}
    for dept, share in mix.items():
        if share < CLASS_LEVEL_SHARE:
            continue
        sellable = list(hierarchy.departments[dept].classes)
        picks: list[str] = []
        for _ in range(min(int(rng.integers(3, 7)), len(sellable))):
            pool = shared_classes[dept] if rng.random() < spec.overlap else sellable
            pool = [c for c in pool if c not in picks] or [c for c in sellable if c not in picks]
            picks.append(str(pool[rng.integers(len(pool))]))
        classes[dept] = picks
    order_value = _lognormal(rng, TYPICAL_ORDER_VALUE, spec.spending_spread, 10.0, 400.0)
    visits = _lognormal(rng, TYPICAL_VISITS_PER_MONTH, spec.frequency_spread, 0.3, 8.0)
    tiers = rng.dirichlet([2.0, 1.8, 0.8])
    styles = rng.gamma(1.0, 1.0, size=len(STYLES)) * 1.5 + 0.1
    female = _female_share(mix)
    youngest = int(rng.integers(16, 61))
    kids = sum(s for d, s in mix.items() if d.lower().startswith("kids"))
    demographics = {"age_range": [youngest, min(youngest + int(rng.integers(10, 26)), 85)],
                    "gender": {"Female": female, "Male": round(1.0 - female, 2)},
                    "has_children": bool(kids >= 0.1), "lifestyle": "drawn at random"}
    if kids > 0:
        demographics["children"] = {"count": [1, int(rng.integers(1, 4))], "age_at_start": [0, int(rng.integers(3, 13))]}
    leading = sorted(mix, key=mix.get, reverse=True)[:2]
    return {
        "weight": weight,
        "description": (f"Random persona buying mostly {' and '.join(leading)}; orders of about "
                        f"GBP {order_value:.0f}, {visits:.1f} visits a month"),
        "demographics": demographics,
        "department_preferences": mix,
        "class_preferences": classes,
        "brand_tier_affinity": _round_shares(dict(zip(BRAND_TIERS, tiers.tolist())), 3),
        "style_affinity": {s: round(float(w), 2) for s, w in zip(STYLES, styles)},
        "online_share": round(float(rng.uniform(0.1, 0.45)), 2),
        "spending_profile": {"avg_order_value": [round(order_value * 0.75, 1), round(order_value * 1.3, 1)],
                             "frequency_per_month": [round(visits * 0.7, 2), round(visits * 1.4, 2)]},
    }


def _lognormal(rng: np.random.Generator, typical: float, spread: float, low: float, high: float) -> float:
    return float(np.clip(math.exp(math.log(typical) + rng.normal(0.0, spread)), low, high))


def _female_share(mix: dict[str, float]) -> float:
    """Women buy the ladies' departments, men the men's; the others say nothing about gender."""
    ladies = sum(s for d, s in mix.items() if d.lower().startswith("ladies"))
    mens = sum(s for d, s in mix.items() if d.lower().startswith("mens"))
    return round(float(np.clip(0.5 + ladies - mens, 0.05, 0.95)), 2)
