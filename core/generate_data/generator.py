"""Synthetic retail transactions, drawn visit by visit and line by line from personas.

Customer totals are never drawn. Each customer gets a persona, a first visit
(newcomers join over the window), a visit rate (gamma-distributed around the
persona's frequency), a BG/NBD-style chance of dropping out after each
purchase, a target order value, an online share, their own sizes and their
children's ages, and their usual classes. Visits follow the calendar (month
and weekday weights, closed days) and the persona's scenarios (time-bounded
changes to visit rate, basket size, department and class mix, style and
discounts). Each visit is an order whose lines are drawn from the persona's
department mix around the order's main department; each line is an item of
the catalog in the customer's size, at a lognormal price around its base
price, possibly discounted; some lines come back later as linked return
lines. The till's other lines (bag levy, gift cards, charity, concessions)
and rare data-quality noise are added as a retailer's data has them. Every
total a later stage computes is a sum of these lines.

Randomness is drawn per block of :data:`BLOCK_SIZE` customers from
``default_rng([seed, 2, block])``, so the data does not depend on the chunk
size. Everything is vectorised with NumPy over a block; Python loops run
over personas, scenarios' regimes and departments only. Blocks may be drawn
in worker processes side by side (:mod:`core.generate_data.workers`: the
pool, the hand-over through shared memory, workers dying with their parent).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.domain import tables
from core.generate_data.products import Catalog, build_catalog
from core.generate_data.settings import SIZE_SCALES
from core.generate_data.identity import assign_identities
from core.generate_data.plan import SKU_CODE_COLUMNS, GenerationPlan, _search_from, build_plan  # noqa: F401 - build_plan re-exported
from core.generate_data.report import GenerationReport
from core.generate_data.workers import draw_in_workers

log = logging.getLogger(__name__)

BLOCK_SIZE = 1000
"""Customers per random-number block: the unit that makes the data independent of chunk size."""

__all__ = ["BLOCK_SIZE", "GenerationPlan", "Catalog", "build_catalog", "build_plan", "generate",
           "TRANSACTION_COLUMNS", "CUSTOMER_COLUMNS", "PRODUCT_COLUMNS", "TRANSACTION_SCHEMA"]

TRANSACTION_COLUMNS = tables.TRANSACTION_COLUMNS
CUSTOMER_COLUMNS = tables.CUSTOMER_COLUMNS
PRODUCT_COLUMNS = tables.PRODUCT_COLUMNS
TRANSACTION_SCHEMA = tables.TRANSACTION_SCHEMA


# ----------------------------------------------------------------------------------------------
# Customers


def draw_customers(first_id: int, n: int, plan: GenerationPlan, rng: np.random.Generator) -> dict:
    """Draw ``n`` customers' profiles, hidden behaviour and tastes.

    Who a customer is (persona, age, gender, region) and how often and how much they shop are
    per customer; what they buy (mixes, usual classes, sizes, children) is per *slot*: slot
    ``i`` is customer ``i`` shopping for themselves, slot ``n + i`` for the household member
    they also shop for (``member_share`` of their lines; 0 for most customers). Each slot's
    tastes are drawn around its persona's by :func:`draw_tastes`.
    """
    cfg, names, personas = plan.cfg, plan.persona_names, plan.personas
    weights = np.array([personas[p].weight for p in names])
    persona = rng.choice(len(names), size=n, p=weights / weights.sum())
    age = np.empty(n, dtype=np.int16)
    female = np.empty(n, dtype=bool)
    freq_mean = np.empty(n)
    aov_u = rng.random(n)
    dropout_mean = np.empty(n)
    online_mean = np.empty(n)
    for i, name in enumerate(names):
        rows = np.flatnonzero(persona == i)
        m = len(rows)
        pz = personas[name]
        demo = pz.demographics
        age[rows] = rng.integers(int(demo.age_range[0]), int(demo.age_range[1]) + 1, size=m)
        female[rows] = rng.random(m) < demo.gender.get("Female", 0.0)
        freq_mean[rows] = np.mean(pz.spending_profile.frequency_per_month)
        dropout_mean[rows] = (cfg.dropout_probability if pz.spending_profile.dropout_probability is None
                              else pz.spending_profile.dropout_probability)
        online_mean[rows] = cfg.channel.online_share if pz.online_share is None else pz.online_share
    shape = cfg.visit_rate_shape
    rate = rng.gamma(shape, freq_mean / shape)
    kappa = cfg.dropout_concentration
    dropout = np.where(dropout_mean > 0,
                       rng.beta(np.maximum(dropout_mean * kappa, 1e-6),
                                np.maximum((1 - dropout_mean) * kappa, 1e-6)), 0.0)
    ck = cfg.channel.concentration
    online = rng.beta(np.maximum(online_mean * ck, 1e-6), np.maximum((1 - online_mean) * ck, 1e-6))
    existing = rng.random(n) < cfg.start_customer_share
    signup_before = rng.integers(1, 3 * 365, size=n)  # existing customers joined up to 3 years earlier

    # Households: a share of the customers whose persona lists household members also shop for one.
    hh = cfg.households
    n_members = plan.member_count[persona]
    household = (n_members > 0) & (rng.random(n) < hh.share)
    pick = np.minimum((rng.random(n) * n_members).astype(np.int64), np.maximum(n_members - 1, 0))
    member = np.where(household, plan.members[persona, pick], persona)
    member_share = np.where(household, rng.uniform(*hh.member_line_share, size=n), 0.0)

    regions = list(cfg.regions)
    region = rng.choice(len(regions), size=n, p=np.array(list(cfg.regions.values())) / sum(cfg.regions.values()))
    return {
        "customer_id": np.arange(first_id, first_id + n, dtype=np.int64), "persona": persona, "age": age,
        "female": female, "region": region, "rate": rate, "aov": _order_value(plan, persona, aov_u),
        "aov_u": aov_u, "dropout": dropout, "online": online,
        "existing": existing, "signup_before": signup_before,
        "household": household, "member_share": member_share,
        "slots": draw_tastes(np.concatenate([persona, member]), plan, rng),
    }


def _order_value(plan: GenerationPlan, persona: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Target average order value at quantile ``u`` of each persona's configured range."""
    ranges = np.array([plan.personas[p].spending_profile.avg_order_value for p in plan.persona_names])
    low, high = ranges[persona, 0], ranges[persona, 1]
    return low + u * (high - low)


def _dirichlet(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
    """One Dirichlet draw per row of ``alpha`` (rows of zeros stay zero; a zero entry stays zero)."""
    g = rng.standard_gamma(np.maximum(alpha, 1e-300)) * (alpha > 0)
    total = g.sum(axis=-1, keepdims=True)
    positive = total > 0
    g /= np.where(positive, total, 1.0)
    # A row whose draws all underflow (tiny alphas) falls back to its mean.
    empty = ~positive[..., 0]
    if empty.any():
        g[empty] = alpha[empty] / np.maximum(alpha[empty].sum(axis=-1, keepdims=True), 1e-300)
    return g


def draw_tastes(slot_persona: np.ndarray, plan: GenerationPlan, rng: np.random.Generator) -> dict:
    """What each slot buys: its own department, tier, style and class mixes, usual classes, sizes, children.

    Mixes are Dirichlet draws around the slot persona's configured ones
    (``generate_data.customer_variation``): the mean over customers is the
    persona's mix, and customers of one persona differ as shoppers of one kind do.
    """
    cfg, cat = plan.cfg, plan.catalog
    var = cfg.customer_variation
    m = len(slot_persona)
    n_depts = len(cat.departments)
    department = _dirichlet(rng, var.department_concentration * plan.persona_department[slot_persona])
    tier = _dirichlet(rng, var.brand_tier_concentration * plan.persona_tier[slot_persona])
    style = _dirichlet(rng, var.style_concentration * plan.persona_style[slot_persona])

    # Usual classes: the persona's listed classes (class level) or the customer's own picks
    # (department level), each weighted by the customer's own Dirichlet draw.
    max_picks = max(int(plan.picks_range[..., 1].max()), 1)
    width = max(plan.preferred.shape[2], max_picks)
    usual = np.zeros((m, n_depts, width), dtype=np.int64)
    count = np.ones((m, n_depts), dtype=np.int64)
    level = plan.class_level[slot_persona]
    for d, dept in enumerate(cat.departments):
        rows_d = cat.department_classes(dept)
        usual[:, d, :] = rows_d[np.minimum(np.arange(width), len(rows_d) - 1)]
        # Sorting is the cost: only slots that will read their picks here get theirs.
        used = np.flatnonzero(plan.picks_used[slot_persona, d])
        order = np.argsort(rng.random((len(used), len(rows_d))), axis=1)[:, :max_picks]
        usual[used, d, :order.shape[1]] = rows_d[order]
        low = plan.picks_range[slot_persona, d, 0]
        high = plan.picks_range[slot_persona, d, 1]
        count[:, d] = np.maximum(low + np.floor(rng.random(m) * (high - low + 1)).astype(np.int64), 1)
    listed = np.flatnonzero(level.any(axis=1))
    for d in range(n_depts):
        rows = listed[level[listed, d]]
        usual[rows, d, :plan.preferred.shape[2]] = plan.preferred[slot_persona[rows], d]
        count[rows, d] = plan.preferred_count[slot_persona[rows], d]
    present = np.arange(width)[None, None, :] < count[:, :, None]
    # Weights only where the slot buys at all (the rest stay equal, never read).
    buys = np.flatnonzero((department > 0).ravel())
    weights = np.broadcast_to(present / count[:, :, None], present.shape).reshape(-1, width).copy()
    weights[buys] = _dirichlet(rng, var.class_concentration / count.reshape(-1, 1)[buys]
                               * present.reshape(-1, width)[buys])
    cum = _cumulative_last_axis(weights.reshape(m, n_depts, width))
    cum[present.sum(axis=2, keepdims=True) - 1 <= np.arange(width)[None, None, :]] = 1.0 + 1e-9

    # Sizes: one per adult scale (own, or the partner's for the other gender's departments).
    sizes = np.zeros((m, len(SIZE_SCALES)), dtype=np.int64)
    for scale, shares in cfg.catalog.adult_sizes.items():
        p = np.array(list(shares.values()))
        sizes[:, SIZE_SCALES.index(scale)] = rng.choice(len(p), size=m, p=p / p.sum())
    n_children = np.ones(m, dtype=np.int64)
    child_age = rng.uniform(0, 14, size=(m, 4))
    for i, name in enumerate(plan.persona_names):
        children = plan.personas[name].demographics.children
        if children is None:
            continue
        rows = np.flatnonzero(slot_persona == i)
        low, high = (int(v) for v in children.count)
        n_children[rows] = rng.integers(low, min(high, 4) + 1, size=len(rows))
        child_age[rows] = rng.uniform(*children.age_at_start, size=(len(rows), 4))
    child_age[np.arange(4)[None, :] >= n_children[:, None]] = np.nan
    # Replenishment: in each department, the slot's most weighted usual class that is a basic, with its
    # own cycle and a phase (the day within the cycle it runs out).
    is_basic = ~np.isnan(plan.basic_cycle[:, 0])
    basic_weight = np.where(present & is_basic[usual], weights.reshape(m, n_depts, width), -1.0)
    best = basic_weight.argmax(axis=2)
    has_basic = np.take_along_axis(basic_weight, best[..., None], axis=2)[..., 0] >= 0
    basic = np.where(has_basic, np.take_along_axis(usual, best[..., None], axis=2)[..., 0], -1)
    bounds = plan.basic_cycle[np.maximum(basic, 0)]
    length = np.where(has_basic, bounds[..., 0] + rng.random((m, n_depts)) * (bounds[..., 1] - bounds[..., 0]), 1.0)
    return {"persona": slot_persona, "department": department, "tier": tier, "style": style,
            "usual": usual, "usual_cum": cum, "usual_count": count, "sizes": sizes,
            "n_children": n_children, "child_age": child_age, "basic": basic,
            "basic_cycle": np.maximum(length, 1.0), "basic_phase": rng.random((m, n_depts)) * length}


def _cumulative_last_axis(values: np.ndarray) -> np.ndarray:
    """``np.cumsum(values, axis=-1)`` for a short last axis: a column at a time is several times faster
    than numpy's loop per row, and adds the same numbers in the same order."""
    cum = np.empty_like(values)
    cum[..., 0] = values[..., 0]
    for k in range(1, values.shape[-1]):
        np.add(cum[..., k - 1], values[..., k], out=cum[..., k])
    return cum


def _add_after_event_slots(c: dict, o: dict, plan: GenerationPlan, rng: np.random.Generator) -> None:
    """Give every customer with a life event a slot of tastes for their new persona (``c["after_slot"]``).

    The new mixes are drawn around the new persona's, but the customer keeps their adult sizes,
    their brand-tier taste relative to their persona (a premium-leaning shopper stays so), and
    their children; one who had none and becomes a parent gets a child born on the event day.
    """
    n = len(c["persona"])
    slots = c["slots"]
    changed = np.flatnonzero(o["event_day"] < plan.n_days)
    c["after_slot"] = np.arange(n)
    if not len(changed):
        return
    new = draw_tastes(o["to"][changed], plan, rng)
    old_persona, new_persona = c["persona"][changed], o["to"][changed]
    lean = slots["tier"][changed] / np.maximum(plan.persona_tier[old_persona], 1e-9)
    tier = plan.persona_tier[new_persona] * lean
    total = tier.sum(axis=1, keepdims=True)
    new["tier"] = np.where(total > 0, tier / np.where(total > 0, total, 1.0), new["tier"])
    new["sizes"] = slots["sizes"][changed]
    newborn = plan.persona_has_children[new_persona] & ~plan.persona_has_children[old_persona]
    keep = ~newborn
    new["n_children"][keep] = slots["n_children"][changed[keep]]
    new["child_age"][keep] = slots["child_age"][changed[keep]]
    new["n_children"][newborn] = 1
    new["child_age"][newborn] = np.nan
    new["child_age"][newborn, 0] = -o["event_day"][changed[newborn]] / 365.25  # age 0 on the event day
    first = len(slots["persona"])
    for key, value in new.items():
        slots[key] = np.concatenate([slots[key], value])
    c["after_slot"][changed] = first + np.arange(len(changed))


def department_table(slots: dict, plan: GenerationPlan) -> np.ndarray:
    """Every slot's cumulative department mix under each regime of its persona, stacked for a search.

    Row ``slot * width + local regime`` holds the slot's own mix times the regime's boosts,
    renormalised, offset by 2 per row and padded for :func:`_search_from`.
    """
    persona = slots["persona"]
    boost = plan.regime_boost[plan.persona_regimes[persona]]  # (slots, regimes of the persona, departments)
    weights = slots["department"][:, None, :] * boost
    total = weights.sum(axis=2, keepdims=True)
    # A customer whose every department is switched off by a scenario keeps their own mix.
    weights = np.where(total > 0, weights, slots["department"][:, None, :])
    cum = _cumulative_last_axis(weights)
    cum /= cum[:, :, -1:]
    cum[:, :, -1] = 1.0 + 1e-9
    rows = cum.shape[0] * cum.shape[1]
    flat = cum.reshape(rows, -1) + 2.0 * np.arange(rows)[:, None]
    return _padded_table(flat.ravel(), cum.shape[2] - 1)


def _padded_table(flat: np.ndarray, longest: int) -> np.ndarray:
    return np.concatenate([flat, np.full(1 << max(longest, 1).bit_length(), np.inf)])


# ----------------------------------------------------------------------------------------------
# Orders and lines


def _draw_orders(c: dict, plan: GenerationPlan, rng: np.random.Generator) -> dict:
    """Visit days of every customer: first visit, Poisson visits after it, dropout."""
    n = len(c["persona"])
    persona = c["persona"]
    cum = plan.intensity_cum  # (personas, days + 1): one row per persona, shared by its customers
    total = cum[persona, -1]
    rate = c["rate"]
    # First visit: newcomers join at a seasonal day over the window; existing customers' first
    # visit is their process's first arrival, given that there is one.
    u = rng.random(n)
    target_new = u * total
    mass = rate * total
    target_old = -np.log1p(-u * -np.expm1(-mass)) / np.maximum(rate, 1e-12)
    target = np.where(c["existing"], np.minimum(target_old, total * (1 - 1e-12)), target_new)
    first_day = _invert_rows(plan, persona, target)

    # A life event on day e switches the customer to another persona's calendar and visit rate:
    # the visits after the first are spread over the mass of both parts, before and after e.
    event = _draw_life_events(c, first_day, plan, rng)
    after, event_day = event["to"], event["day"]
    rate_after = rate * plan.persona_frequency[after] / plan.persona_frequency[persona]
    start = cum[persona, first_day + 1]
    before_mass = (cum[persona, np.maximum(event_day, first_day + 1)] - start) * rate
    after_mass = (cum[after, -1] - cum[after, np.maximum(event_day, first_day + 1)]) * rate_after
    remaining = before_mass + after_mass
    extra = rng.poisson(np.maximum(remaining, 0.0))
    # BG/NBD: after each purchase, stop for good with the customer's dropout probability.
    with np.errstate(divide="ignore"):
        kept_max = np.where(c["dropout"] > 0, rng.geometric(np.maximum(c["dropout"], 1e-12)), 1 << 30)
    n_orders = np.minimum(1 + extra, kept_max)
    dropped = kept_max <= 1 + extra

    # One draw per candidate visit (the first visit's is unused); a customer keeps the first
    # ``n_orders`` visits. A visit's day grows with its draw, so the kept visits are the first
    # visit and the extra ones with the smallest draws: only those are turned into days.
    draws = rng.random(int(n + extra.sum()))
    extra_customer, extra_draw = _sort_draws_within(np.repeat(np.arange(n), extra),
                                                    np.delete(draws, np.cumsum(1 + extra) - 1 - extra))
    rank = np.arange(len(extra_customer)) - np.repeat(np.cumsum(extra) - extra, extra)
    kept = rank < (n_orders - 1)[extra_customer]
    extra_customer, extra_draw = extra_customer[kept], extra_draw[kept]
    mass = extra_draw * remaining[extra_customer]
    first_part = mass < before_mass[extra_customer]
    row = np.where(first_part, persona[extra_customer], after[extra_customer])
    target = np.where(first_part, start[extra_customer] + mass / rate[extra_customer],
                      cum[after[extra_customer], np.maximum(event_day, first_day + 1)[extra_customer]]
                      + (mass - before_mass[extra_customer]) / rate_after[extra_customer])
    order_customer = np.repeat(np.arange(n), n_orders)
    first_order = np.cumsum(n_orders) - n_orders
    day = np.empty(len(order_customer), dtype=first_day.dtype)
    later = np.ones(len(order_customer), dtype=bool)
    later[first_order] = False
    day[first_order] = first_day
    day[later] = _invert_rows(plan, row, target)
    last_day = day[first_order + n_orders - 1]
    return {"customer": order_customer, "day": day, "first_day": first_day, "dropped": dropped,
            "last_day": last_day, "n_orders": n_orders, "event_day": event_day, "to": after,
            "event": event["which"], "rate_after": rate_after, "at_risk_years": event["at_risk_years"]}


def _draw_life_events(c: dict, first_day: np.ndarray, plan: GenerationPlan, rng: np.random.Generator) -> dict:
    """Which customers change persona (``life_events``), on which day, and to what.

    Each event a customer's persona and age allow happens after an exponential time (its yearly
    rate a constant hazard) from the day after their first visit; the earliest one inside the
    history wins, and one is the most a customer has. ``day`` is ``n_days`` without an event;
    ``at_risk_years`` is the time each customer was exposed to an event, for the report.
    """
    n = len(first_day)
    persona, age = c["persona"], c["age"]
    years = np.full(n, np.inf)
    which = np.full(n, -1, dtype=np.int64)
    u = rng.random((len(plan.event_rate), n))
    for j in range(len(plan.event_rate)):
        eligible = ((persona == plan.event_from[j]) & (age >= plan.event_age[j, 0])
                    & (age <= plan.event_age[j, 1]))
        with np.errstate(divide="ignore"):
            wait = -np.log1p(-u[j]) / plan.event_rate[j] if plan.event_rate[j] > 0 else np.full(n, np.inf)
        hit = eligible & (wait < years)
        years[hit], which[hit] = wait[hit], j
    horizon = plan.n_days - (first_day + 1)
    offset = np.floor(np.minimum(years, horizon / 365.25 + 1) * 365.25).astype(np.int64)
    happened = (which >= 0) & (offset < horizon)
    which[~happened] = -1
    day = np.where(happened, first_day + 1 + offset, plan.n_days)
    to = np.where(happened, plan.event_to[np.maximum(which, 0)], persona) if len(plan.event_to) else persona.copy()
    at_risk = np.maximum(np.where(happened, offset, horizon), 0) / 365.25
    return {"which": which, "day": day, "to": to, "at_risk_years": at_risk}


def _sort_draws_within(group: np.ndarray, draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``group`` (non-negative, small) and ``draws`` sorted by group, then draw.

    ``Generator.random`` returns multiples of 2**-53, so a group and a draw pack exactly into
    one 64-bit integer whose plain sort is several times faster than ``np.lexsort``.
    """
    if len(group) == 0 or group.max() >= 1 << 10:
        order = np.lexsort((draws, group))
        return group[order], draws[order]
    key = (group.astype(np.int64) << 53) | (draws * 2.0**53).astype(np.int64)
    key.sort()
    return key >> 53, (key & ((1 << 53) - 1)) * 2.0**-53


def _invert_rows(plan: GenerationPlan, rows: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Day whose interval of ``plan.intensity_cum[row]`` holds ``target``, for many rows at once.

    The persona rows are stacked with offsets into one increasing array
    (:attr:`GenerationPlan.intensity_flat`); rows of earlier personas lie below any target.
    """
    width = plan.intensity_cum.shape[1]
    found = _search_from(plan.intensity_flat, rows * width, target + plan.intensity_offset[rows],
                         plan.intensity_steps, right=True) - 1
    return np.clip(found, 0, width - 2)


def draw_block(first_id: int, n: int, plan: GenerationPlan, rng: np.random.Generator) -> dict:
    """Customers, orders and order lines of one block, as NumPy arrays (see :func:`block_tables`)."""
    cfg, cat = plan.cfg, plan.catalog
    c = draw_customers(first_id, n, plan, rng)
    o = _draw_orders(c, plan, rng)
    persona = c["persona"]
    order_customer, order_day = o["customer"], o["day"]
    n_orders = len(order_customer)
    # From a life event on, the customer shops as their new persona, in their own new slot.
    after_event = order_day >= o["event_day"][order_customer]
    order_persona = np.where(after_event, o["to"][order_customer], persona[order_customer])
    _add_after_event_slots(c, o, plan, rng)
    o["persona"] = order_persona
    order_regime = plan.day_regime[order_persona, order_day]
    regime_basket = np.array([r.basket_multiplier for r in plan.regimes])
    online = (rng.random(n_orders) < c["online"][order_customer]) if cfg.channel.enabled else np.zeros(n_orders, bool)

    # Lines per order: 1 + negative binomial, mean set by the customer's target order value.
    aov = np.where(after_event, _order_value(plan, o["to"], c["aov_u"])[order_customer], c["aov"][order_customer])
    mean_lines = aov / plan.expected_line_value[order_persona]
    mean_extra = np.maximum(mean_lines * regime_basket[order_regime] - 1.0, 0.0)
    r = cfg.basket_dispersion
    extra = rng.negative_binomial(r, r / (r + mean_extra))
    order_lines = 1 + extra

    # Whom each line is bought for: the customer (slot i) or their household member (slot n + i).
    slots = c["slots"]
    table = department_table(slots, plan)
    share = c["member_share"]
    own_slot = np.where(after_event, c["after_slot"][order_customer], order_customer)
    order_slot = np.where(rng.random(n_orders) < share[order_customer], n + order_customer, own_slot)
    mission = _draw_departments(plan, table, slots, order_slot, order_day, rng.random(n_orders))
    line_order = np.repeat(np.arange(n_orders), order_lines)
    n_lines = len(line_order)
    line_customer = order_customer[line_order]
    line_day = order_day[line_order]
    independent_slot = np.where(rng.random(n_lines) < share[line_customer], n + line_customer,
                                own_slot[line_order])
    focused = rng.random(n_lines) < cfg.basket_focus
    line_slot = np.where(focused, order_slot[line_order], independent_slot)
    independent = _draw_departments(plan, table, slots, line_slot, line_day, rng.random(n_lines))
    dept = np.where(focused, mission[line_order], independent)
    line_persona = slots["persona"][line_slot]
    line_regime = plan.day_regime[line_persona, line_day]

    cls, usual_line = _draw_classes(line_slot, line_persona, line_regime, dept, slots, plan, rng)
    cls, replenished, due = _replenish(cls, usual_line, line_order, line_slot, dept, order_customer, order_day,
                                       slots, plan, rng)
    drawn = cls
    cls, mission = _missions(cls, line_order, dept, replenished, n_orders, plan, rng)
    item = _draw_items(cls, line_slot, line_regime, slots, plan, rng)
    sku = cat.item_first_sku[item] + _draw_sizes(cls, line_slot, line_day, slots, plan, rng)

    q = np.asarray(cfg.quantity_probabilities)
    u = rng.random(n_lines)
    quantity = np.ones(n_lines, dtype=np.int64)
    for threshold in np.cumsum(q / q.sum())[:-1]:  # a few values: comparisons beat a search
        quantity += u >= threshold
    sigma = cfg.unit_price_sigma
    regular = np.round(cat.item_price[item] * rng.lognormal(-sigma**2 / 2, sigma, n_lines), 2)
    regular = np.maximum(regular, 0.01)
    sale_share = np.array([g.sale_share for g in plan.regimes])[line_regime]
    sale_low = np.array([g.sale_depth[0] for g in plan.regimes])[line_regime]
    sale_high = np.array([g.sale_depth[1] for g in plan.regimes])[line_regime]
    on_sale = rng.random(n_lines) < sale_share
    promoted = ~on_sale & (rng.random(n_lines) < cfg.promotion_share)
    p_low, p_high = cfg.promotion_depth
    depth_u = rng.random(n_lines)
    depth = np.where(on_sale, sale_low + depth_u * (sale_high - sale_low),
                     np.where(promoted, p_low + depth_u * (p_high - p_low), 0.0))
    unit_price = np.maximum(np.round(regular * (1 - depth), 2), 0.01)
    amount = np.round(quantity * unit_price, 2)
    discount = np.round(quantity * (regular - unit_price), 2)

    # Returns: category rates, more often online; one return trip per order, dated after it.
    dept_rate = np.array([cfg.department_return_rates.get(d, cfg.return_rate) for d in cat.departments])
    line_online = online[line_order]
    p_return = dept_rate[dept] * np.where(line_online, cfg.channel.online_return_multiplier, 1.0)
    low, high = (int(v) for v in cfg.return_delay_days)
    delay = rng.integers(low, high + 1, size=n_orders)
    returned = (rng.random(n_lines) < np.minimum(p_return, 1.0)) & (order_day[line_order] + delay[line_order]
                                                                    < plan.n_days)
    # Source-system noise: a few lines land on DUMMY / UNASSIGNED / Unknown classes.
    class_code = cls - np.array([cat.department_classes(d)[0] for d in cat.departments])[dept]
    dq = rng.random(n_lines) < cfg.non_merchandise.data_quality_rate
    dept_out, class_out = dept.copy(), class_code.copy()
    dq_rows = np.flatnonzero(dq)
    dq_dept = plan.special_departments.get("data_quality")
    for d in np.unique(dept[dq_rows]):
        rows = dq_rows[dept[dq_rows] == d]
        choices = plan.data_quality_class[int(d)]
        to_dummy = rng.random(len(rows)) < (0.2 if choices else 1.0)
        if dq_dept is not None and to_dummy.any():
            dept_out[rows[to_dummy]] = dq_dept
            class_out[rows[to_dummy]] = 0
        keep = rows[~to_dummy] if dq_dept is not None else rows
        if choices and len(keep):
            class_out[keep] = np.asarray(choices)[rng.integers(0, len(choices), size=len(keep))]

    lines = {
        "order": line_order, "dept": dept_out, "class": class_out, "sku": sku,
        "quantity": quantity.astype(np.int32), "unit_price": unit_price, "amount": amount,
        "discount": discount, "merch_dept": dept, "regime": line_regime, "class_row": cls,
        "class_code": class_code, "p_return": p_return, "slot": line_slot, "persona": line_persona,
        "tier": cat.item_tier[item], "usual": usual_line, "replenished": replenished, "mission": mission,
        "class_drawn": drawn,
    }
    other = _draw_other_lines(order_day, online, plan, rng)
    # Identities are drawn last, from this state, by :func:`add_identities`: in the stage process,
    # while the workers draw on (Faker's pools are the stage process's alone).
    identity_state = rng.bit_generator.state if plan.cfg.identity.enabled else None
    return {"identity_state": identity_state, "customers": c, "orders": o, "order_online": online,
            "order_regime": order_regime, "replenishment_due": due,
            "lines": lines, "returned": returned, "return_delay": delay, "other": other}


def _draw_departments(plan: GenerationPlan, table: np.ndarray, slots: dict, slot: np.ndarray,
                      day: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Department of each draw ``u``: the slot's own mix under its persona's regime that day."""
    n_depts = len(plan.catalog.departments)
    row = slot * plan.persona_regimes.shape[1] + plan.day_local[slots["persona"][slot], day]
    found = _search_from(table, row * n_depts, u + 2.0 * row, plan.department_steps)
    return np.minimum(found, n_depts - 1)


def _draw_classes(line_slot, line_persona, line_regime, dept, slots: dict, plan: GenerationPlan,
                  rng: np.random.Generator) -> np.ndarray:
    """Class of every merchandise line: the slot's usual classes by its own weights, exploration, scenario focus."""
    cat = plan.catalog
    n = len(dept)
    n_depts = len(cat.departments)
    u = rng.random(n)
    width = slots["usual"].shape[2]
    key = line_slot * n_depts + dept
    # The slot's cumulative class weights, rows offset by 2, searched from each row's start.
    flat = _padded_table((slots["usual_cum"].reshape(-1, width)
                          + 2.0 * np.arange(len(slots["persona"]) * n_depts)[:, None]).ravel(), width - 1)
    index = _search_from(flat, key * width, u + 2.0 * key, max(width - 1, 1).bit_length())
    cls = slots["usual"].reshape(-1)[key * width + np.minimum(index, width - 1)]
    first = np.array([cat.department_classes(d)[0] for d in cat.departments])
    count = np.array([len(cat.department_classes(d)) for d in cat.departments])
    explore = np.flatnonzero(rng.random(n) < plan.exploration[line_persona])
    anywhere_u = rng.random(n)[explore]
    cls[explore] = first[dept[explore]] + np.floor(anywhere_u * count[dept[explore]]).astype(np.int64)
    usual_line = np.ones(n, dtype=bool)
    usual_line[explore] = False
    focus_u = rng.random(n)
    pick_u = rng.random(n)
    if plan.focus_share.any():
        # Only lines under some focus at all are tested against each focus, in config order.
        hits = np.flatnonzero(focus_u < plan.focus_share[line_regime * n_depts + dept])
        h_regime, h_dept, h_focus, h_pick = line_regime[hits], dept[hits], focus_u[hits], pick_u[hits]
        for r, regime in enumerate(plan.regimes):
            for d, share, rows in regime.class_focus:
                hit = (h_regime == r) & (h_dept == d) & (h_focus < share)
                cls[hits[hit]] = rows[np.floor(h_pick[hit] * len(rows)).astype(np.int64)]
                usual_line[hits[hit]] = False
    return cls, usual_line


def _first_per_key(key: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Indices of the first candidate line of each distinct key (lines are in order order)."""
    rows = np.flatnonzero(candidates)
    _, first = np.unique(key[rows], return_index=True)
    return rows[first]


def _replenish(cls, usual_line, line_order, line_slot, dept, order_customer, order_day, slots: dict,
               plan: GenerationPlan, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """Basics bought again when they run out (``generate_data.replenishment``).

    A slot's basic in a department runs out every ``cycle`` days (its own cycle and phase); on the
    customer's first visit after it ran out that has a usual line in the department, that line is
    the basic with ``probability``; on visits when it is not due, a usual line that drew it goes
    to the slot's next usual class. Only usual lines change, to usual classes of the slot, so
    department and usual-class shares stay as configured.

    Returns the classes, which lines were turned, and the counts behind the report's check.
    """
    n_depts = len(plan.catalog.departments)
    q = plan.cfg.replenishment.probability
    key = line_slot * n_depts + dept
    basic = slots["basic"].ravel()[key]
    previous = np.r_[-1, order_day[:-1]]
    previous[np.r_[True, order_customer[1:] != order_customer[:-1]]] = -(10**6)  # first visit: nothing ran out
    length, phase = slots["basic_cycle"].ravel()[key], slots["basic_phase"].ravel()[key]
    day, before = order_day[line_order], previous[line_order]
    due = (basic >= 0) & usual_line & (np.floor((day - phase) / length) > np.floor((before - phase) / length))
    first = _first_per_key(line_order * (len(slots["persona"]) * n_depts) + key, due)
    turned = first[rng.random(len(first)) < q]
    replenished = np.zeros(len(cls), dtype=bool)
    replenished[turned] = True
    cls = cls.copy()
    # Between cycles nobody restocks: a usual line that drew the basic on a visit when it was not due
    # goes to the slot's next usual class instead (when it has another).
    width = slots["usual"].shape[2]
    ran_out = np.zeros(len(order_day), dtype=bool)
    ran_out[line_order[due]] = True
    stocked = (cls == basic) & usual_line & ~ran_out[line_order]
    count = slots["usual_count"].ravel()[key[stocked]]
    position = np.argmax(slots["usual"].reshape(-1, width)[key[stocked]] == basic[stocked, None], axis=1)
    cls[stocked] = slots["usual"].reshape(-1, width)[key[stocked], (position + 1) % np.maximum(count, 1)]
    cls[turned] = basic[turned]
    # Of the due (order, slot, department) groups, how many now hold the basic (turned, or drawn anyway).
    holds = (cls == basic) & due
    group = line_order * (len(slots["persona"]) * n_depts) + key
    return cls, replenished, {"due": len(first), "bought": _count_distinct(group[holds])}


def _count_distinct(nearly_sorted: np.ndarray) -> int:
    """Number of distinct values; a stable sort (timsort) is quick on values mostly in order already."""
    if not len(nearly_sorted):
        return 0
    values = np.sort(nearly_sorted, kind="stable")
    return int(np.count_nonzero(values[1:] != values[:-1])) + 1


def _missions(cls, line_order, dept, replenished, n_orders: int, plan: GenerationPlan,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Complementary classes of one shopping mission (``generate_data.missions``).

    An order holding a mission's anchor class becomes the mission with ``probability``: for each
    other class of the mission, the order's first line in its department not yet used (not the
    anchor, not a replenished basic, not an earlier companion) becomes that class. Departments
    stay as drawn; only classes within them change.
    """
    mission = np.full(len(cls), -1, dtype=np.int64)
    if not len(plan.mission_anchor):
        return cls, mission
    cls = cls.copy()
    on_order = rng.random((len(plan.mission_anchor), n_orders)) < plan.cfg.missions.probability
    for m, anchor in enumerate(plan.mission_anchor):
        anchor_line = cls == anchor
        orders = np.zeros(n_orders, dtype=bool)
        orders[line_order[anchor_line]] = True
        orders &= on_order[m]
        # Only the lines of the mission's orders (a few in a hundred) can change: work on those.
        rows = np.flatnonzero(orders[line_order])
        if not len(rows):
            continue
        rows_order, rows_dept = line_order[rows], dept[rows]
        used = anchor_line[rows] | replenished[rows] | (mission[rows] >= 0)
        for d, row in plan.mission_classes[m]:
            candidates = np.flatnonzero((rows_dept == d) & ~used)
            # Lines are in order order: an order's first candidate is where its order number starts.
            keys = rows_order[candidates]
            first = candidates[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else candidates
            cls[rows[first]] = row
            mission[rows[first]] = m
            used[first] = True
    return cls, mission


def _draw_items(cls: np.ndarray, line_slot: np.ndarray, line_regime: np.ndarray, slots: dict,
                plan: GenerationPlan, rng: np.random.Generator) -> np.ndarray:
    """Item of every line: a brand tier by the slot's tier mix, a style by its style weights, then an item.

    Tiers the class lacks and styles its tier lacks are left out; the style's weight is the
    slot's own times the regime's style boost times the items of that style, so that within a
    tier an item's chance is its style's weight, as a shopper browsing a rail would pick.
    """
    u = rng.random((3, len(cls)))
    # Column by column: one gather of a slot's weight per line and column is several times
    # cheaper than gathering (lines, tiers) and (lines, styles) rows, and the sums are the
    # same additions in the same order, so the draws are bit for bit those of the row form.
    tier_share, class_tiers = slots["tier"].T, plan.class_tiers.T
    tier_w = []
    for k in range(len(class_tiers)):
        in_class = class_tiers[k][cls]
        weight = tier_share[k][line_slot] * in_class
        weight += 1e-9 * in_class  # a tier the shopper never buys, when it is all the class has
        tier_w.append(weight)
    tier = _pick(tier_w, u[0])
    n_tiers, n_styles = plan.group_count.shape[1:]
    class_tier = cls * n_tiers + tier
    counts = plan.group_count.reshape(-1, n_styles).T
    style_share = slots["style"].T
    boosted = np.flatnonzero((plan.regime_style != 1.0).any(axis=1))
    # Few regimes boost a style (a trend season): only their lines pay for it.
    rows = np.flatnonzero(np.isin(line_regime, boosted)) if len(boosted) else None
    style_w = []
    for k in range(n_styles):
        weight = style_share[k][line_slot]
        if rows is not None:
            weight[rows] *= plan.regime_style[line_regime[rows], k]
        weight += 1e-9
        weight *= counts[k][class_tier]
        style_w.append(weight)
    style = _pick(style_w, u[1])
    group = class_tier * n_styles + style
    first = plan.group_first.ravel()[group]
    n_items = plan.group_count.ravel()[group]
    return plan.group_items[first + np.minimum((u[2] * n_items).astype(np.int64), n_items - 1)]


def _pick(weights: list[np.ndarray], u: np.ndarray) -> np.ndarray:
    """Index of the column (of ``weights``, a few columns of one weight per row) chosen by each ``u``.

    The chance of a column is proportional to its weight: the cumulative weights are summed
    left to right, as ``np.cumsum`` along a row does.
    """
    cum = weights[0]
    threshold_at = [cum]
    for column in weights[1:]:
        cum = cum + column
        threshold_at.append(cum)
    threshold = u * cum
    chosen = np.zeros(len(u), dtype=np.int64)
    for edge in threshold_at:
        chosen += edge < threshold
    return np.minimum(chosen, len(weights) - 1)


def _draw_sizes(cls, line_slot, line_day, slots: dict, plan: GenerationPlan, rng: np.random.Generator) -> np.ndarray:
    """Size index within the item's SKUs: the slot's own size, or their child's size that day."""
    cat, catalog_cfg = plan.catalog, plan.cfg.catalog
    scale = cat.class_scale[cls]
    size = slots["sizes"][line_slot, scale]
    kids = np.flatnonzero((scale == SIZE_SCALES.index("kids")) | (scale == SIZE_SCALES.index("kids_footwear")))
    if len(kids):
        nk = slots["n_children"][line_slot[kids]]
        child = np.minimum((rng.random(len(kids)) * nk).astype(np.int64), nk - 1)
        age = slots["child_age"][line_slot[kids], child] + line_day[kids] / 365.25
        for name, bands in (("kids", catalog_cfg.kids_size_bands), ("kids_footwear", catalog_cfg.kids_footwear_bands)):
            rows = scale[kids] == SIZE_SCALES.index(name)
            edges = np.array(sorted(b[0] for b in bands.values()))
            size[kids[rows]] = np.clip(np.searchsorted(edges, age[rows], side="right") - 1, 0, len(edges) - 1)
    size[scale == SIZE_SCALES.index("none")] = 0
    return size


def _draw_other_lines(order_day, online, plan: GenerationPlan, rng: np.random.Generator) -> dict:
    """Bag levy, gift card, charity and concession lines of orders (never returned)."""
    nm = plan.cfg.non_merchandise
    n = len(order_day)
    store = ~online
    december = plan.day_month[order_day] == 12
    parts = []
    special = plan.special_departments

    def add(kind: str, mask: np.ndarray, values: np.ndarray, class_index: np.ndarray | int = 0) -> None:
        if kind not in special:
            return
        rows = np.flatnonzero(mask)
        cls = np.broadcast_to(np.asarray(class_index), (n,))[rows]
        parts.append((rows, np.full(len(rows), special[kind]), cls, values[rows]))

    u = rng.random((4, n))
    add("bag_levy", store & (u[0] < nm.bag_levy_probability), np.full(n, nm.bag_levy_price))
    p_gift = nm.gift_card_probability * np.where(december, nm.gift_card_december_multiplier, 1.0)
    gift_values = np.asarray(nm.gift_card_values, dtype=float)
    add("gift_card", u[1] < p_gift, gift_values[rng.integers(0, len(gift_values), size=n)])
    charity_values = np.asarray(nm.charity_values, dtype=float)
    add("charity", store & (u[2] < nm.charity_probability),
        charity_values[rng.integers(0, len(charity_values), size=n)])
    if "concession" in special:
        d = special["concession"]
        low, high = nm.concession_price_range
        values = np.round(rng.uniform(low, high, size=n), 2)
        add("concession", store & (u[3] < nm.concession_probability), values,
            rng.integers(0, plan.department_sellable[d], size=n))
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return {"order": empty, "dept": empty, "class": empty, "amount": np.zeros(0)}
    return {"order": np.concatenate([p[0] for p in parts]), "dept": np.concatenate([p[1] for p in parts]),
            "class": np.concatenate([p[2] for p in parts]),
            "amount": np.round(np.concatenate([p[3] for p in parts]), 2)}


# ----------------------------------------------------------------------------------------------
# Tables


def block_tables(block: dict, plan: GenerationPlan, first_order_id: int) -> tuple[pd.DataFrame, pa.Table]:
    """The customers and transactions tables of one block, with order ids from ``first_order_id``.

    See :func:`transactions_table`.
    """
    return (customer_frame(add_identities(customer_columns(block, plan), plan), plan),
            transactions_table(block, plan, first_order_id))


def transactions_table(block: dict, plan: GenerationPlan, first_order_id: int) -> pa.Table:
    """The transactions table of one block, with order ids from ``first_order_id``.

    Transactions are sorted by customer, date, purchase before return; each
    order is one purchase transaction, and its returned lines (if any) one
    return transaction ``return_delay`` days later, linked by ``original_order_id``.
    """
    c, o, lines, other = block["customers"], block["orders"], block["lines"], block["other"]
    start = np.datetime64(plan.data.history_start, "D")
    order_customer, order_day = o["customer"], o["day"]
    n_orders = len(order_customer)
    returned = block["returned"]
    # Lines are grouped by order, in order index order: the orders with a returned line, sorted.
    returned_order = lines["order"][returned]
    return_orders = returned_order[np.r_[True, returned_order[1:] != returned_order[:-1]]] \
        if len(returned_order) else returned_order
    return_day = order_day[return_orders] + block["return_delay"][return_orders]
    txn_customer = np.concatenate([order_customer, order_customer[return_orders]])
    txn_day = np.concatenate([order_day, return_day])
    txn_return = np.concatenate([np.zeros(n_orders, np.int64), np.ones(len(return_orders), np.int64)])
    txn_order = np.concatenate([np.arange(n_orders), return_orders])
    ranking = _lexsort_small((txn_order, txn_return, txn_day, txn_customer))
    txn_rank = np.empty(len(ranking), dtype=np.int64)
    txn_rank[ranking] = np.arange(len(ranking))
    purchase_rank = txn_rank[:n_orders]
    return_rank = np.full(n_orders, -1, dtype=np.int64)
    return_rank[return_orders] = txn_rank[n_orders:]

    # Rows: merchandise lines, the till's other lines, then the returned lines, put in
    # transaction order by one stable sort.
    r_idx = np.flatnonzero(returned)
    r_order = lines["order"][r_idx]
    n_merch, n_other = len(lines["order"]), len(other["order"])
    rank = np.concatenate([purchase_rank[lines["order"]], purchase_rank[other["order"]], return_rank[r_order]])
    sort = np.argsort(rank, kind="stable")
    order_sorted = np.concatenate([lines["order"], other["order"], r_order])[sort]
    is_return = sort >= n_merch + n_other

    def rows(merch: np.ndarray, till, returns: np.ndarray | None = None) -> np.ndarray:
        till = np.full(n_other, till, dtype=merch.dtype) if np.ndim(till) == 0 else till
        return np.concatenate([merch, till, merch[r_idx] if returns is None else returns])[sort]

    dept = rows(lines["dept"], other["dept"])
    class_global = plan.class_offsets[dept] + rows(lines["class"], other["class"])
    sku = rows(lines["sku"], -1)
    # Amounts are rounded to cents when drawn; a change of sign keeps them so.
    quantity = rows(lines["quantity"], 1, -lines["quantity"][r_idx])
    unit_price = rows(lines["unit_price"], other["amount"])
    amount = rows(lines["amount"], other["amount"], -lines["amount"][r_idx])
    discount = rows(lines["discount"], 0.0, -lines["discount"][r_idx])
    # Only return rows differ from their order's day and link to an order: set those alone.
    return_rows = np.flatnonzero(is_return)
    returned_from = order_sorted[return_rows]
    day = order_day[order_sorted]
    day[return_rows] += block["return_delay"][returned_from]

    customer_id = c["customer_id"][order_customer[order_sorted]]
    order_id = first_order_id + rank[sort]
    original = np.zeros(len(sort), dtype=np.int64)
    original[return_rows] = first_order_id + purchase_rank[returned_from]
    no_sku = sku < 0
    sku_row = np.where(no_sku, 0, sku)
    sku_validity = _validity(~no_sku)
    if plan.cfg.channel.enabled:
        channel = _strings(block["order_online"][order_sorted], pa.array(["store", "online"]))
    else:
        channel = pa.DictionaryArray.from_arrays(pa.nulls(len(sort), pa.int32()), pa.array([], pa.string()))
    columns = {
        "customer_id": pa.array(customer_id, pa.int64()),
        "order_id": pa.array(order_id, pa.int64()),
        "order_date": _timestamps(start, day),
        "channel": channel,
        "department": _strings(dept, plan.product_codes["department"][1]),
        "class": _strings(plan.product_codes["class"][0][class_global], plan.product_codes["class"][1]),
        **{name: _sku_strings(plan, i, sku_row, no_sku, sku_validity) for i, name in enumerate(SKU_CODE_COLUMNS)},
        "quantity": pa.array(quantity.astype(np.int32, copy=False), pa.int32()),
        "unit_price": pa.array(unit_price, pa.float64()),
        "discount_amount": pa.array(discount, pa.float64()),
        "line_amount": pa.array(amount, pa.float64()),
        "is_return": pa.array(is_return, pa.bool_()),
        "original_order_id": pa.array(original, mask=~is_return, type=pa.int64()),
    }
    return pa.Table.from_pydict(columns, schema=DICTIONARY_TRANSACTION_SCHEMA)


def _lexsort_small(keys: tuple[np.ndarray, ...]) -> np.ndarray:
    """``np.lexsort(keys)`` for non-negative integer keys whose combinations are unique.

    When their bit widths allow, the keys pack into one int64, and one sort of it is several
    times faster than lexsort's sort per key.
    """
    widths = [int(k.max()).bit_length() if len(k) else 0 for k in keys]
    if sum(widths) > 62:
        return np.lexsort(keys)
    packed = np.zeros(len(keys[0]), dtype=np.int64)
    shift = 0
    for key, width in zip(keys, widths):
        packed |= key.astype(np.int64) << shift
        shift += width
    return np.argsort(packed)


def _validity(valid: np.ndarray) -> tuple[pa.Buffer, int] | None:
    """Arrow validity bitmap of a boolean mask and its null count (None when nothing is null)."""
    nulls = len(valid) - int(np.count_nonzero(valid))
    return None if nulls == 0 else (pa.py_buffer(np.packbits(valid, bitorder="little")), nulls)


def _timestamps(start: np.datetime64, day: np.ndarray) -> pa.Array:
    """Microsecond timestamps of whole days after ``start``, computed in integers (NumPy's
    day-to-microsecond conversion cost as much as the rest of the column's table)."""
    micros = np.asarray(day, dtype=np.int64) * 86_400_000_000 + int(start.astype("datetime64[us]").astype(np.int64))
    return pa.Array.from_buffers(pa.timestamp("us"), len(micros), [None, pa.py_buffer(micros)])


def _sku_strings(plan: GenerationPlan, attribute: int, sku_row: np.ndarray, no_sku: np.ndarray,
                 sku_validity: tuple[pa.Buffer, int] | None) -> pa.DictionaryArray:
    """The dictionary column of one SKU attribute (``SKU_CODE_COLUMNS[attribute]``), null without a SKU."""
    codes = plan.sku_codes[attribute][sku_row]
    if plan.sku_codes_complete[attribute]:
        validity = sku_validity
    else:  # some SKUs lack the attribute (code -1): null there too
        validity = _validity(~no_sku & (codes >= 0))
    return _strings(np.maximum(codes, 0), plan.product_codes[SKU_CODE_COLUMNS[attribute]][1], validity)


def _strings(codes: np.ndarray, dictionary: pa.Array,
             validity: tuple[pa.Buffer, int] | None = None) -> pa.DictionaryArray:
    """Dictionary array of ``codes`` (in range of ``dictionary``) with a validity bitmap.

    Writing Parquet from codes avoids materialising millions of strings. The codes are in
    range by construction, so Arrow's check is skipped, and one bitmap serves every column
    that is null on the same rows.
    """
    codes = np.ascontiguousarray(codes, dtype=np.int32)
    bitmap, nulls = validity if validity is not None else (None, 0)
    indices = pa.Array.from_buffers(pa.int32(), len(codes), [bitmap, pa.py_buffer(codes)], nulls)
    return pa.DictionaryArray.from_arrays(indices, dictionary, safe=False)


def dictionary_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with every string column dictionary-encoded (same metadata)."""
    return pa.schema([pa.field(f.name, pa.dictionary(pa.int32(), pa.string()) if f.type == pa.string()
                               else f.type, nullable=f.nullable) for f in schema], metadata=schema.metadata)


DICTIONARY_TRANSACTION_SCHEMA = dictionary_schema(TRANSACTION_SCHEMA)
"""The schema of the tables :func:`generate` yields; written to Parquet it reads back as
:data:`TRANSACTION_SCHEMA` (see ``01_generate_data.py``)."""


_DELTA_COLUMNS = ("order_id", "original_order_id")
TRANSACTION_PARQUET_OPTIONS = {
    "store_schema": False,
    # Min/max statistics of the string columns cost half the writing time and no stage uses
    # them; ids and dates keep theirs for readers that filter on them.
    "write_statistics": ["customer_id", "order_id", "order_date"],
    # Order ids rise through the file: delta encoding stores them in a tenth of the bytes of a
    # dictionary and writes faster (about 0.04 CPU-s per million lines, 14% of the file).
    "use_dictionary": [name for name in TRANSACTION_COLUMNS if name not in _DELTA_COLUMNS],
    "column_encoding": {name: "DELTA_BINARY_PACKED" for name in _DELTA_COLUMNS},
}
"""``pyarrow.parquet.ParquetWriter`` options for ``transactions.parquet`` (see decisions.md)."""


def customer_columns(block: dict, plan: GenerationPlan) -> dict:
    """A block's customers as plain arrays (codes, days) and the random state of their identities.

    Cheap to send between processes; :func:`add_identities` draws the identity fields and
    :func:`customer_frame` turns them, gathered over blocks, into the customers table: one
    DataFrame per chunk instead of one per block saves its fixed cost (a few milliseconds a
    call, as much as drawing the block's customers).
    """
    c, o = block["customers"], block["orders"]
    return {
        "customer_id": c["customer_id"], "persona": o["to"],  # the persona at the end (after a life event, the new one)
        "age": c["age"], "female": c["female"], "region": c["region"],
        "signup_day": np.where(c["existing"], -c["signup_before"], o["first_day"]),
        "dropped": o["dropped"], "dropout_day": np.where(o["dropped"], o["last_day"], 0),
        "identity_state": block["identity_state"],
    }


def add_identities(columns: dict, plan: GenerationPlan) -> dict:
    """:func:`customer_columns` with the fake identity fields drawn (None when ``identity`` is off).

    They are drawn from the block's random stream where :func:`draw_block` left it, so they are
    the same wherever this runs; the stage process runs it (with Faker's pools, built once, on
    the first block) while the workers draw on.
    """
    columns = dict(columns)
    state = columns.pop("identity_state")
    if state is None:
        n = len(columns["customer_id"])
        return {**columns, **{name: np.full(n, None, dtype=object) for name in tables.IDENTITY_COLUMNS}}
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    identity = assign_identities(plan.identity, columns["female"], columns["customer_id"],
                                 np.random.Generator(bit_generator))
    return {**columns, **identity}


def customer_frame(columns: dict[str, np.ndarray], plan: GenerationPlan) -> pd.DataFrame:
    """The customers table (``CUSTOMER_COLUMNS``) of :func:`customer_columns` (of one or more blocks)."""
    names = plan.persona_names
    personas = plan.personas
    persona = columns["persona"]
    start = np.datetime64(plan.data.history_start, "D")
    frame = {
        "customer_id": columns["customer_id"],
        "persona": pd.array(np.asarray(names, dtype=object)[persona], dtype="string"),
        "age": pd.array(columns["age"], dtype="Int16"),
        "gender": pd.array(np.where(columns["female"], "Female", "Male"), dtype="string"),
        "has_children": pd.array(np.asarray([personas[p].demographics.has_children for p in names],
                                            dtype=object)[persona], dtype="boolean"),
        "lifestyle": pd.array(np.asarray([personas[p].demographics.lifestyle for p in names],
                                         dtype=object)[persona], dtype="string"),
        "region": pd.array(np.asarray(list(plan.cfg.regions), dtype=object)[columns["region"]], dtype="string"),
        "signup_date": (start + columns["signup_day"]).astype("datetime64[us]"),
        "dropout_date": np.where(columns["dropped"], start + columns["dropout_day"],
                                 np.datetime64("NaT")).astype("datetime64[us]"),
        **{column: pd.array(columns[column], dtype="string") for column in tables.IDENTITY_COLUMNS},
    }
    # One constructor call in the contract's order: adding columns one by one cost more than
    # drawing the customers.
    return pd.DataFrame({name: frame[name] for name in CUSTOMER_COLUMNS})


def _concatenate(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def generate(plan: GenerationPlan, seed: int, report=None, workers: int = 1,
             start_method: str | None = None, events: list | None = None) -> Iterator[tuple[pd.DataFrame, pa.Table]]:
    """Yield ``(customers, transactions)`` per chunk of ``chunk_size`` customers (whole blocks).

    Blocks of :data:`BLOCK_SIZE` customers draw from their own random
    streams, and order ids run on across blocks in block order, so the
    output is the same whatever the chunk size, the number of ``workers``
    (processes drawing blocks side by side, :mod:`core.generate_data.workers`)
    and their ``start_method`` (``"fork"``, ``"spawn"``; None for the
    platform's default). ``report``, if given, is a
    :class:`core.generate_data.report.GenerationReport`: it counts every
    block (in the workers, then merged). ``events``, if given, is a list that
    receives each chunk's life events (:func:`persona_events`) as it is yielded.
    """
    n_blocks = -(-plan.data.n_customers // BLOCK_SIZE)
    blocks_per_chunk = max(1, -(-plan.cfg.chunk_size // BLOCK_SIZE))
    draw = functools.partial(_make_block, plan, seed, report is not None)
    if workers > 1 and n_blocks > 1:
        blocks = draw_in_workers(draw, n_blocks, workers, blocks_per_chunk, start_method)
    else:
        blocks = (draw(index) for index in range(n_blocks))
    with contextlib.closing(blocks):  # stops the workers when the caller stops early
        yield from _chunks(blocks, n_blocks, blocks_per_chunk, report, plan.data.n_customers, plan, events)


def _chunks(blocks: Iterator[tuple], n_blocks: int, blocks_per_chunk: int, report,
            n_total: int, plan: GenerationPlan,
            events: list | None = None) -> Iterator[tuple[pd.DataFrame, pa.Table]]:
    """Blocks in order gathered into chunks, order ids numbered on from block to block."""
    next_order_id = 1
    customer_parts, event_parts, transaction_tables = [], [], []
    for index, ((customers, block_events), transactions, part) in enumerate(blocks):
        if len(block_events["customer_id"]):
            event_parts.append(block_events)
        if part is not None:
            report.merge(part)
        if transactions.num_rows:
            transactions = _shift_order_ids(transactions, next_order_id)
            next_order_id = int(pc.max(transactions["order_id"]).as_py()) + 1
        customer_parts.append(add_identities(customers, plan))
        transaction_tables.append(transactions)
        if len(customer_parts) == blocks_per_chunk or index == n_blocks - 1:
            chunk_customers = customer_frame(_concatenate(customer_parts), plan)
            if events is not None and event_parts:
                events.append(events_frame(_concatenate(event_parts), plan))
            chunk = pa.concat_tables(transaction_tables)
            log.info("generated customers up to %d of %d: %d lines",
                     int(chunk_customers["customer_id"].iloc[-1]), n_total, chunk.num_rows)
            customer_parts, event_parts, transaction_tables = [], [], []
            yield chunk_customers, chunk
            del chunk  # written by the caller: free it now, not once the next chunk is assembled


def _make_block(plan: GenerationPlan, seed: int, want_report: bool, index: int) -> tuple:
    """Customers, transactions (order ids from 0) and report counts of block ``index``."""
    first = index * BLOCK_SIZE
    n = min(BLOCK_SIZE, plan.data.n_customers - first)
    block = draw_block(first + 1, n, plan, np.random.default_rng([seed, 2, index]))
    transactions = transactions_table(block, plan, 0)
    customers = (customer_columns(block, plan), event_columns(block, plan))
    part = None
    if want_report:
        part = GenerationReport(plan)
        part.add(block)
        part = part.compact()  # the caller has the configs
    return customers, transactions, part


def persona_events(block: dict, plan: GenerationPlan) -> pd.DataFrame:
    """The life events of a block's customers: ``customer_id``, ``event_date``, ``from_persona``, ``to_persona``."""
    return events_frame(event_columns(block, plan), plan)


def event_columns(block: dict, plan: GenerationPlan) -> dict[str, np.ndarray]:
    """A block's life events as plain arrays (see :func:`events_frame`)."""
    c, o = block["customers"], block["orders"]
    changed = np.flatnonzero(o["event_day"] < plan.n_days)
    return {"customer_id": c["customer_id"][changed], "event_day": o["event_day"][changed],
            "from": c["persona"][changed], "to": o["to"][changed]}


def events_frame(columns: dict[str, np.ndarray], plan: GenerationPlan) -> pd.DataFrame:
    """The persona events table of :func:`event_columns` (of one or more blocks)."""
    names = np.asarray(plan.persona_names, dtype=object)
    start = np.datetime64(plan.data.history_start, "D")
    return pd.DataFrame({
        "customer_id": columns["customer_id"],
        "event_date": (start + columns["event_day"]).astype("datetime64[us]"),
        "from_persona": pd.array(names[columns["from"]], dtype="string"),
        "to_persona": pd.array(names[columns["to"]], dtype="string"),
    })


def _shift_order_ids(table: pa.Table, offset: int) -> pa.Table:
    for name in ("order_id", "original_order_id"):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, table.schema.field(i), pc.add(table[name], pa.scalar(offset, pa.int64())))
    return table


def generate_all(plan: GenerationPlan, seed: int, report=None, workers: int = 1,
                 start_method: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every chunk of :func:`generate` concatenated, transactions as plain-string pandas (small data only)."""
    chunks = list(generate(plan, seed, report=report, workers=workers, start_method=start_method))
    customers = pd.concat([c for c, _ in chunks], ignore_index=True)
    transactions = pa.concat_tables([t.cast(TRANSACTION_SCHEMA) for _, t in chunks]).to_pandas()
    return customers, transactions
