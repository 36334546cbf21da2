"""The generation plan: everything about the personas, scenarios and catalog the generator draws from.

:func:`build_plan` turns the validated config (personas, scenarios,
hierarchy, ``data`` and ``generate_data``) into arrays the generator indexes
per customer, day and line; the generation report compares what was drawn
with the config through the same plan.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pyarrow as pa

from core.domain.columns import DAYS_PER_MONTH
from core.domain.hierarchy import Hierarchy
from core.generate_data.identity import IdentityPools, build_identity_pools
from core.generate_data.personas import Persona, Scenario
from core.generate_data.products import Catalog, build_catalog
from core.generate_data.settings import BRAND_TIERS, DataConfig, GenerateDataConfig, parse_month_day

# The generator's department codes: merchandise departments first (catalog order), then these kinds.
NON_MERCHANDISE_KINDS = ("bag_levy", "gift_card", "charity", "concession", "data_quality")


@dataclasses.dataclass
class Regime:
    """What a persona's customers do on days with one combination of active scenarios."""

    persona: int
    scenarios: tuple[int, ...]
    department_cum: np.ndarray
    department_share: np.ndarray
    visit_multiplier: float
    basket_multiplier: float
    sale_share: float
    sale_depth: tuple[float, float]
    class_focus: list[tuple[int, float, np.ndarray]]
    department_boost: np.ndarray
    style_boost: np.ndarray


@dataclasses.dataclass
class GenerationPlan:
    """Everything derived from config once, before any customer is drawn.

    Attributes
    ----------
    persona_names, scenario_names : list of str
    day_regime : ndarray (personas, days) of int
        Regime of each persona on each day of the history.
    intensity_cum : ndarray (personas, days + 1)
        Cumulative expected visits per day at a rate of one visit a month.
    regimes : list of Regime
    intensity_flat : ndarray
        ``intensity_cum`` with each row offset so that the rows stack into one increasing array,
        padded with infinities for :func:`_search_from`; ``intensity_steps`` the search steps.
    persona_department, persona_tier, persona_style : ndarray (personas, departments | tiers | styles)
        Each persona's configured mixes (styles normalised to sum to 1): the centres customers'
        own mixes are drawn around (:func:`core.generate_data.generator.draw_tastes`).
    regime_boost, regime_style : ndarray (regimes, departments | styles)
        What a regime's scenarios multiply a customer's department and style weights by.
    persona_regimes, day_local : ndarray
        The regimes of each persona (padded with its first), and each persona's regime on each
        day as an index into that list: a customer's department table has one row per entry.
    group_first, group_count : ndarray (classes, tiers, styles)
        Items of a class in one brand tier and style are ``group_items[first:first + count]``.
    members, member_count : ndarray
        Per persona, the personas its household customers also shop for (``household_members``).
    event_from, event_to, event_rate, event_age : ndarray
        Every life event of personas.yml (``life_events``): from and to persona, yearly rate, and
        the [min, max] age on history_start of the customers it can happen to.
    department_names : list of str
        Merchandise departments then the non-merchandise ones the generator writes.
    """

    personas: dict[str, Persona]
    scenarios: dict[str, Scenario]
    persona_names: list[str]
    scenario_names: list[str]
    catalog: Catalog
    data: DataConfig
    cfg: GenerateDataConfig
    n_days: int
    day_month: np.ndarray
    base_intensity: np.ndarray
    scenario_days: np.ndarray
    day_regime: np.ndarray
    intensity_cum: np.ndarray
    intensity_flat: np.ndarray
    intensity_offset: np.ndarray
    regimes: list[Regime]
    intensity_steps: int
    department_steps: int
    persona_department: np.ndarray
    persona_tier: np.ndarray
    persona_style: np.ndarray
    regime_boost: np.ndarray
    regime_style: np.ndarray
    persona_regimes: np.ndarray
    day_local: np.ndarray
    group_first: np.ndarray
    group_count: np.ndarray
    group_items: np.ndarray
    class_tiers: np.ndarray
    members: np.ndarray
    member_count: np.ndarray
    persona_frequency: np.ndarray
    persona_has_children: np.ndarray
    event_from: np.ndarray
    event_to: np.ndarray
    event_rate: np.ndarray
    event_age: np.ndarray
    basic_cycle: np.ndarray
    mission_anchor: np.ndarray
    mission_classes: list
    expected_line_value: np.ndarray
    preferred: np.ndarray
    preferred_count: np.ndarray
    class_level: np.ndarray
    picks_range: np.ndarray
    picks_used: np.ndarray
    focus_share: np.ndarray
    exploration: np.ndarray
    department_names: list[str]
    department_classes: list[list[str]]
    department_sellable: list[int]
    special_departments: dict[str, int]
    class_offsets: np.ndarray
    product_codes: dict
    sku_codes: np.ndarray
    sku_codes_complete: np.ndarray
    data_quality_class: dict[int, list[int]]
    identity_seed: int
    _identity_pools: IdentityPools | None = dataclasses.field(default=None, repr=False)

    @property
    def identity(self) -> IdentityPools | None:
        """Faker's pools of identity values (None when ``identity.enabled`` is off), made on first use.

        Faker takes about 0.4 CPU-s for the shipped 5,000 values per field; made lazily, the pools
        are built by the stage process while the generator's workers draw their first blocks (the
        workers never need them), not before the workers start.
        """
        if not self.cfg.identity.enabled:
            return None
        if self._identity_pools is None:
            self._identity_pools = build_identity_pools(self.cfg.identity.locale, self.cfg.identity.pool_size,
                                                        self.identity_seed)
        return self._identity_pools


def build_plan(personas: dict[str, Persona], scenarios: dict[str, Scenario], hierarchy: Hierarchy,
               data: DataConfig, cfg: GenerateDataConfig, seed: int,
               catalog: Catalog | None = None) -> GenerationPlan:
    """Derive the calendar, regimes, item weights and class tables from config."""
    catalog = catalog or build_catalog(hierarchy, cfg.catalog, seed)
    names = list(personas)
    scenario_names = list(scenarios)
    start = pd.Timestamp(data.history_start)
    n_days = (data.history_end - data.history_start).days + 1
    days = start + pd.to_timedelta(np.arange(n_days), unit="D")
    month, day_of_month, weekday = days.month.to_numpy(), days.day.to_numpy(), days.day_of_week.to_numpy()
    closed = np.zeros(n_days, dtype=bool)
    for text in cfg.closed_days:
        m, d = parse_month_day(text)
        closed |= (month == m) & (day_of_month == d)
    base = np.asarray(cfg.month_weights)[month - 1] * np.asarray(cfg.weekday_weights)[weekday] * ~closed
    base = base / base.mean()

    active = np.zeros((len(scenario_names), n_days), dtype=bool)
    for s, name in enumerate(scenario_names):
        (m0, d0), (m1, d1) = scenarios[name].days()
        key, lo, hi = month * 100 + day_of_month, m0 * 100 + d0, m1 * 100 + d1
        active[s] = (key >= lo) & (key <= hi) if lo <= hi else (key >= lo) | (key <= hi)

    n_depts = len(catalog.departments)
    styles = catalog.styles
    regimes: list[Regime] = []
    regime_of: dict[tuple[int, tuple[int, ...]], int] = {}
    day_regime = np.empty((len(names), n_days), dtype=np.int32)
    intensity_cum = np.zeros((len(names), n_days + 1))
    n_styles = len(styles)
    persona_tier = np.zeros((len(names), len(BRAND_TIERS)))
    persona_style = np.zeros((len(names), n_styles))
    for p, name in enumerate(names):
        persona = personas[name]
        attached = [s for s, sn in enumerate(scenario_names) if name in scenarios[sn].personas]
        share = np.array([persona.department_preferences.get(d, 0.0) for d in catalog.departments])
        tier_mix = persona.brand_tier_affinity or cfg.brand_tier_affinity
        style_base = persona.style_affinity or cfg.style_affinity
        persona_tier[p] = [tier_mix.get(t, 0.0) for t in BRAND_TIERS]
        base_style = np.array([style_base.get(x, 0.0) for x in styles])
        persona_style[p] = base_style / base_style.sum() if base_style.sum() > 0 else 1.0 / n_styles
        visit = np.ones(n_days)
        combos = np.zeros(n_days, dtype=np.int64)
        for bit, s in enumerate(attached):
            combos |= active[s].astype(np.int64) << bit
        for combo in np.unique(combos):
            on = tuple(s for bit, s in enumerate(attached) if combo >> bit & 1)
            chosen = [scenarios[scenario_names[s]] for s in on]
            weights = share.copy()
            style = np.ones(n_styles)
            boost = np.ones(n_depts)
            visit_mult = basket_mult = 1.0
            sale_share, sale_depth = 0.0, (0.0, 0.0)
            focus: list[tuple[int, float, np.ndarray]] = []
            for sc in chosen:
                for dept, factor in sc.department_boost.items():
                    boost[catalog.departments.index(dept)] *= factor
                for x, factor in sc.style_boost.items():
                    style[styles.index(x)] *= factor
                visit_mult *= sc.visit_multiplier
                basket_mult *= sc.basket_multiplier
                if sc.discount_share > sale_share:
                    sale_share, sale_depth = sc.discount_share, tuple(sc.discount_depth)
                for dept, f in sc.class_focus.items():
                    rows = np.array([catalog.class_row(dept, c) for c in f.classes])
                    focus.append((catalog.departments.index(dept), f.share, rows))
            weights = share * boost
            if weights.sum() <= 0:
                # Every preferred department switched off: keep the base mix.
                weights, boost = share.copy(), np.ones(n_depts)
            weights = weights / weights.sum()
            cum = np.cumsum(weights)
            cum[-1] = 1.0 + 1e-9
            regime_of[(p, on)] = len(regimes)
            regimes.append(Regime(persona=p, scenarios=on, department_cum=cum, department_share=weights,
                                  visit_multiplier=visit_mult, basket_multiplier=basket_mult,
                                  sale_share=sale_share, sale_depth=sale_depth, class_focus=focus,
                                  department_boost=boost, style_boost=style))
            on_days = combos == combo
            day_regime[p, on_days] = regime_of[(p, on)]
            visit[on_days] = visit_mult
        intensity_cum[p, 1:] = np.cumsum(base * visit) / DAYS_PER_MONTH

    offsets = np.arange(len(names)) * (intensity_cum[:, -1].max() + 1.0)

    # Classes: the persona's listed classes (class level) or the customer's own picks (department level).
    max_pref = max([len(v) for p in personas.values() for v in p.class_preferences.values()] + [1])
    preferred = np.zeros((len(names), n_depts, max_pref), dtype=np.int64)
    preferred_count = np.zeros((len(names), n_depts), dtype=np.int64)
    class_level = np.zeros((len(names), n_depts), dtype=bool)
    picks_range = np.zeros((len(names), n_depts, 2), dtype=np.int64)
    exploration = np.array([cfg.exploration_share if personas[n].exploration_share is None
                            else personas[n].exploration_share for n in names])
    for p, name in enumerate(names):
        persona = personas[name]
        for d, dept in enumerate(catalog.departments):
            listed = persona.class_preferences.get(dept, ())
            n_classes = len(catalog.department_classes(dept))
            if listed:
                class_level[p, d] = True
                rows = [catalog.class_row(dept, c) for c in listed]
                preferred[p, d, :len(rows)] = rows
                preferred_count[p, d] = len(rows)
            low, high = persona.classes_per_department.get(dept, cfg.classes_per_department)
            picks_range[p, d] = (min(int(low), n_classes), min(int(high), n_classes))

    # Mean value of a line per persona (outside scenarios), to turn a target order value into lines.
    groups = _item_groups(catalog)
    q = np.asarray(cfg.quantity_probabilities)
    mean_quantity = float(np.dot(np.arange(1, len(q) + 1), q / q.sum()))
    expected = np.zeros(len(names))
    promo = cfg.promotion_share * np.mean(cfg.promotion_depth)
    for p, name in enumerate(names):
        own = [g for g in regimes if g.persona == p]
        r = next((g for g in own if not g.scenarios), own[0])  # the persona outside its scenarios
        class_mean = _class_mean_price(catalog, groups, persona_tier[p], persona_style[p] * r.style_boost)
        dept_mean = np.zeros(n_depts)
        for d in range(n_depts):
            rows = catalog.department_classes(catalog.departments[d])
            if class_level[p, d]:
                listed = preferred[p, d, :preferred_count[p, d]]
                e = exploration[p]
                dept_mean[d] = (1 - e) * class_mean[listed].mean() + e * class_mean[rows].mean()
            else:
                dept_mean[d] = class_mean[rows].mean()
        expected[p] = mean_quantity * float(np.dot(r.department_share, dept_mean)) * (1 - promo)

    # Departments written by the generator: merchandise, then the till's other lines.
    department_names = list(catalog.departments)
    department_classes = [[catalog.class_names[k] for k in catalog.department_classes(d)]
                          for d in catalog.departments]
    special: dict[str, int] = {}
    for dept_name, dept in hierarchy.departments.items():
        if dept.kind in NON_MERCHANDISE_KINDS:
            special.setdefault(dept.kind, len(department_names))
            special[f"{dept.kind}:{dept_name}"] = len(department_names)
            department_names.append(dept_name)
            department_classes.append(list(dept.classes) + list(dept.data_quality_classes))
    department_sellable = [len(classes) for classes in department_classes]
    for kind_dept in department_names[len(catalog.departments):]:
        department_sellable[department_names.index(kind_dept)] = len(hierarchy.departments[kind_dept].classes)
    # Data-quality classes of merchandise departments are appended after their sellable classes.
    data_quality_class: dict[int, list[int]] = {}
    for d, dept in enumerate(catalog.departments):
        extra = list(hierarchy.departments[dept].data_quality_classes)
        base_len = len(department_classes[d])
        department_classes[d] = department_classes[d] + extra
        data_quality_class[d] = list(range(base_len, base_len + len(extra)))

    return GenerationPlan(
        personas=personas, scenarios=scenarios, persona_names=names, scenario_names=scenario_names,
        catalog=catalog, data=data, cfg=cfg, n_days=n_days, day_month=month, base_intensity=base,
        scenario_days=active, day_regime=day_regime,
        intensity_cum=intensity_cum, intensity_flat=_padded((intensity_cum + offsets[:, None]).ravel(), n_days),
        intensity_offset=offsets, intensity_steps=int(n_days).bit_length(),
        department_steps=max(n_depts - 1, 1).bit_length(),
        regimes=regimes, expected_line_value=expected,
        persona_department=np.array([[personas[n].department_preferences.get(d, 0.0) for d in catalog.departments]
                                     for n in names]),
        persona_tier=persona_tier, persona_style=persona_style,
        regime_boost=np.vstack([r.department_boost for r in regimes]),
        regime_style=np.vstack([r.style_boost for r in regimes]),
        **_persona_regimes(regimes, day_regime), **groups,
        **_members(personas, names), **_life_events(personas, names),
        **_basics_and_missions(cfg, catalog),
        persona_frequency=np.array([np.mean(personas[n].spending_profile.frequency_per_month) for n in names]),
        persona_has_children=np.array([personas[n].demographics.has_children for n in names]),
        preferred=preferred, preferred_count=preferred_count, class_level=class_level,
        picks_range=picks_range, picks_used=_picks_used(regimes, class_level),
        focus_share=_focus_share(regimes, n_depts), exploration=exploration, department_names=department_names,
        department_classes=department_classes, department_sellable=department_sellable,
        special_departments=special,
        class_offsets=np.concatenate([[0], np.cumsum([len(c) for c in department_classes])[:-1]]).astype(np.int64),
        **_product_codes(department_names, department_classes, catalog.products),
        data_quality_class=data_quality_class, identity_seed=seed)


def _padded(flat: np.ndarray, longest: int) -> np.ndarray:
    """``flat`` followed by enough infinities for :func:`_search_from` to count up to ``longest``."""
    return np.concatenate([flat, np.full(1 << max(longest, 1).bit_length(), np.inf)])


def _search_from(table: np.ndarray, start: np.ndarray, target: np.ndarray, steps: int,
                 right: bool = False) -> np.ndarray:
    """How many entries of ``table`` from ``start`` on are below ``target`` (or equal, ``right``).

    ``table`` rises from each start and ends in infinities (:func:`_padded`); the count stops at
    ``2**steps - 1``. Searching from each value's own start, a fixed number of vectorised halving
    steps (binary lifting) replaces ``np.searchsorted`` over the whole stacked table, which was
    several times slower on unsorted values; the count is the one searchsorted finds from
    ``start`` (``side="left"``, or ``"right"``), comparison for comparison.
    """
    pos = start.astype(np.int64, copy=True)
    for step in (1 << k for k in reversed(range(steps))):
        probe = table[pos + (step - 1)]
        pos += ((probe <= target) if right else (probe < target)) * step
    return pos - start


def _picks_used(regimes: list[Regime], class_level: np.ndarray) -> np.ndarray:
    """(personas, departments): whether a persona's customers buy from their own picks there.

    True where the persona prefers the department at department level and any of its regimes
    gives it a share; elsewhere the customer's picks are never read.
    """
    buys = np.zeros(class_level.shape, dtype=bool)
    for regime in regimes:
        buys[regime.persona] |= regime.department_share > 0
    return buys & ~class_level


def _focus_share(regimes: list[Regime], n_depts: int) -> np.ndarray:
    """Largest scenario class-focus share of each (regime, department), flat; 0 without focus."""
    share = np.zeros(len(regimes) * n_depts)
    for r, regime in enumerate(regimes):
        for d, focus, _ in regime.class_focus:
            share[r * n_depts + d] = max(share[r * n_depts + d], focus)
    return share


def _persona_regimes(regimes: list[Regime], day_regime: np.ndarray) -> dict[str, np.ndarray]:
    """Each persona's regimes (padded with its first) and its regime of each day as an index into them."""
    n_personas = day_regime.shape[0]
    own = [[r for r, g in enumerate(regimes) if g.persona == p] for p in range(n_personas)]
    width = max(len(rows) for rows in own)
    table = np.array([rows + [rows[0]] * (width - len(rows)) for rows in own], dtype=np.int64)
    local = np.zeros(len(regimes), dtype=np.int64)
    for rows in own:
        local[rows] = np.arange(len(rows))
    return {"persona_regimes": table, "day_local": local[day_regime]}


def _basics_and_missions(cfg: GenerateDataConfig, catalog: Catalog) -> dict:
    """Per class its replenishment cycle ([min, max] days; NaN: not a basic), and each mission's classes."""
    cycle = np.full((len(catalog.class_names), 2), np.nan)
    for dept, basics in cfg.replenishment.basics.items():
        for name in basics.classes:
            cycle[catalog.class_row(dept, name)] = basics.cycle_days
    anchors, classes = [], []
    for groups in cfg.missions.sets.values():
        rows = [(catalog.departments.index(dept), catalog.class_row(dept, name))
                for dept, names in groups.items() for name in names]
        anchors.append(rows[0][1])
        classes.append(np.array(rows[1:], dtype=np.int64).reshape(-1, 2))
    return {"basic_cycle": cycle, "mission_anchor": np.array(anchors, dtype=np.int64), "mission_classes": classes}


def _life_events(personas: dict[str, Persona], names: list[str]) -> dict[str, np.ndarray]:
    """Every configured life event as parallel arrays (see :class:`GenerationPlan`)."""
    rows = [(p, names.index(e.to), e.yearly_rate, *(e.age_range or (0.0, np.inf)))
            for p, name in enumerate(names) for e in personas[name].life_events]
    table = np.array(rows, dtype=float).reshape(-1, 5)
    return {"event_from": table[:, 0].astype(np.int64), "event_to": table[:, 1].astype(np.int64),
            "event_rate": table[:, 2], "event_age": table[:, 3:5]}


def _item_groups(catalog: Catalog) -> dict[str, np.ndarray]:
    """Items grouped by (class, brand tier, style): a line draws its tier, then its style, then an item.

    Drawing in three small steps lets every customer have their own tier and style mix
    without a weight table per customer.
    """
    n_tiers, n_styles = len(BRAND_TIERS), len(catalog.styles)
    key = (catalog.item_class * n_tiers + catalog.item_tier) * n_styles + catalog.item_style
    order = np.argsort(key, kind="stable")
    count = np.bincount(key, minlength=len(catalog.class_names) * n_tiers * n_styles)
    first = np.concatenate([[0], np.cumsum(count)[:-1]])
    shape = (len(catalog.class_names), n_tiers, n_styles)
    count = count.reshape(shape)
    return {"group_first": first.reshape(shape), "group_count": count, "group_items": order,
            "class_tiers": (count.sum(axis=2) > 0).astype(float)}


def _class_mean_price(catalog: Catalog, groups: dict, tier: np.ndarray, style: np.ndarray) -> np.ndarray:
    """Mean price of a line of each class for a shopper with these tier shares and style weights."""
    count = groups["group_count"]
    n_tiers, n_styles = count.shape[1], count.shape[2]
    key = (catalog.item_class * n_tiers + catalog.item_tier) * n_styles + catalog.item_style
    price = np.bincount(key, weights=catalog.item_price, minlength=count.size).reshape(count.shape)
    mean = price / np.maximum(count, 1)
    style_mass = count * (style[None, None, :] + 1e-9)
    within_tier = (style_mass * mean).sum(axis=2) / np.maximum(style_mass.sum(axis=2), 1e-12)
    tier_mass = groups["class_tiers"] * (tier[None, :] + 1e-9)
    return (tier_mass * within_tier).sum(axis=1) / tier_mass.sum(axis=1)


def _members(personas: dict[str, Persona], names: list[str]) -> dict[str, np.ndarray]:
    """Per persona, the indices of its household members (padded with 0) and their number."""
    width = max([len(personas[n].household_members) for n in names] + [1])
    members = np.zeros((len(names), width), dtype=np.int64)
    count = np.zeros(len(names), dtype=np.int64)
    for p, name in enumerate(names):
        listed = [names.index(m) for m in personas[name].household_members]
        members[p, :len(listed)] = listed
        count[p] = len(listed)
    return {"members": members, "member_count": count}


def _product_codes(plan_departments: list[str], classes: list[list[str]],
                   products: pd.DataFrame) -> dict[str, object]:
    """Per string column: the code of each SKU (or class) and the dictionary of values.

    Returns the plan's ``product_codes`` (column -> (codes, dictionary)), ``sku_codes``
    (the codes of :data:`SKU_CODE_COLUMNS` stacked, one row per column, so one gather serves
    all of them) and ``sku_codes_complete`` (per row: no SKU lacks a value).
    """
    codes: dict[str, tuple[np.ndarray, pa.Array]] = {
        "department": (np.arange(len(plan_departments)), pa.array(plan_departments, pa.string())),
        # Class names repeat across departments ("Kids", "Unknown"): a dictionary must not, or the
        # Parquet writer's output bytes depend on its memo of earlier writes.
        "class": _unique_codes([c for cs in classes for c in cs]),
    }
    for name in SKU_CODE_COLUMNS:
        values = products[name]
        uniques = pd.unique(values.dropna())
        code = pd.Categorical(values, categories=uniques).codes.astype(np.int32)
        # A SKU without a size (size scale none) gets code -1: a null size.
        codes[name] = (code, pa.array(list(uniques), pa.string()))
    stacked = np.vstack([codes[name][0] for name in SKU_CODE_COLUMNS])
    return {"product_codes": codes, "sku_codes": stacked, "sku_codes_complete": (stacked >= 0).all(axis=1)}


SKU_CODE_COLUMNS = ("sku", "brand", "brand_tier", "style", "color", "size")
"""Transaction columns that are attributes of the line's SKU."""


def _unique_codes(values: list[str]) -> tuple[np.ndarray, pa.Array]:
    """Code of each value in a duplicate-free dictionary, and that dictionary."""
    uniques = list(dict.fromkeys(values))
    position = {v: i for i, v in enumerate(uniques)}
    return np.array([position[v] for v in values], dtype=np.int64), pa.array(uniques, pa.string())
