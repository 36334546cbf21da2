"""Proof that generated data matches its config: ``generation_report.json``.

:class:`GenerationReport` is fed every block the generator draws (small
per-persona, per-day and per-department counts, so its memory does not grow
with the number of customers) and then compares what was realised with what
the config asked for:

- persona mix against the configured weights (chi-square test);
- department, brand-tier and usual-class line shares per persona against
  what ``personas.yml`` and ``customer_variation`` imply (worked out from the
  config itself, not from the generator's plan), within ``share_z``
  standard errors derived from the numbers of customers, orders and lines;
- how much customers of one persona differ (their department mixes), and the
  share of household customers, against the config;
- average order value and visit rate per persona against their ranges;
- return rate per department against the configured rates;
- the uplift realised inside each scenario window against outside it.

Every check lists its tolerance (``generate_data.report_tolerances``) and
whether it passed; :attr:`GenerationReport.failures` lists those that did not.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import integrate, stats

from core.domain.columns import DAYS_PER_MONTH
from core.generate_data.personas import Persona, Scenario
from core.generate_data.plan import GenerationPlan
from core.generate_data.settings import BRAND_TIERS

MIN_EXPECTED_LINES = 20
"""A department the config expects this many lines of, and none bought, fails whatever the tolerance."""

SPREAD_SAMPLE = 300
"""Customers per block whose repeat-purchase intervals the replenishment report describes."""

CV_BINS = np.round(np.arange(0.05, 3.0001, 0.05), 2)
"""Bins of the coefficient of variation of days between repeat purchases (for the replenishment report)."""

MIN_LINES_FOR_SPREAD = 30
"""Customers with fewer merchandise lines are left out of the measured spread of department mixes."""



# The expected share of a mission ignores missions that share companion classes (a suit's shirt and tie are
# also the formal jacket's): an order holding both anchors can gain a companion from the other mission. At a
# million customers that put the realised share 0.004 (suit) and 0.008 (formal jacket) above the expectation,
# beyond the sampling error alone; this much is allowed on top of it.
MISSION_OVERLAP_ALLOWANCE = 0.01


class SparseCounts(NamedTuple):
    """The non-zero entries of an array of counts: flat positions and values (see :meth:`GenerationReport.compact`)."""

    index: np.ndarray
    values: np.ndarray


class GenerationReport:
    """Accumulates block statistics and judges them against the config.

    Parameters
    ----------
    plan : GenerationPlan
        What the generator draws from (its catalog and calendar).
    personas, scenarios : dict, optional
        The configuration the data is judged against; by default the plan's. Passing the
        config's own lets a plan that strays from it be caught.
    """

    def __init__(self, plan: GenerationPlan, personas: dict[str, Persona] | None = None,
                 scenarios: dict[str, Scenario] | None = None, generate_config=None):
        self.plan = plan
        self.config_personas = personas if personas is not None else plan.personas
        self.config_scenarios = scenarios if scenarios is not None else plan.scenarios
        self.config_generate = generate_config if generate_config is not None else plan.cfg
        P, D = len(plan.persona_names), plan.n_days
        M, K = len(plan.catalog.departments), len(plan.catalog.class_names)
        self.customers = np.zeros(P, dtype=np.int64)
        self.customers_at_end = np.zeros(P, dtype=np.int64)
        self.extra_orders = np.zeros(P)
        self.active_months = np.zeros(P)
        self.merch_orders = np.zeros(P)
        self.merch_value = np.zeros(P)
        self.lines = np.zeros((P, M))
        self.spend = np.zeros((P, M))
        self.dept_lines = np.zeros(M)
        self.dept_returned = np.zeros(M)
        self.dept_expected_returns = np.zeros(M)
        self.orders_by_day = np.zeros((P, D))
        self.all_orders_by_persona = np.zeros(P)
        self.active_by_day = np.zeros((P, D + 1))
        self.lines_by_day_dept = np.zeros((P, D, M))
        self.discounted_by_day = np.zeros((P, D))
        self.lines_by_day = np.zeros((P, D))
        # Every scenario's focus classes, not only those of the regimes that occur: a short history
        # may miss a scenario's window, and the scenario is still reported (without data inside).
        self.focus_classes = sorted({plan.catalog.class_row(dept, name) for sc in plan.scenarios.values()
                                     for dept, focus in sc.class_focus.items() for name in focus.classes})
        self.class_by_day = np.zeros((P, D, len(self.focus_classes)))
        self.class_lines = np.zeros((P, K))
        self.drawn_class_lines = np.zeros((P, K))  # classes as drawn from tastes, before missions
        self.tier_lines = np.zeros((P, len(BRAND_TIERS)))
        self.slot_lines_sq = np.zeros(P)
        self.group_lines_sq = np.zeros(P)
        self.spread_customers = np.zeros(P)
        self.spread_sum = np.zeros((P, M))
        self.spread_sq = np.zeros((P, M))
        self.spread_noise = np.zeros((P, M))
        self.replenishment_due = 0
        self.replenishment_bought = 0
        self.interval_cv = np.zeros((2, len(CV_BINS) + 1))  # (basics, other usual classes) x CV bins
        self.mission_counts = np.zeros((len(plan.mission_anchor), 6))
        self.event_years = np.zeros(len(plan.event_rate))
        self.event_counts = np.zeros(len(plan.event_rate))
        self.household_eligible = np.zeros(P)
        self.households = np.zeros(P)
        self.other_lines: dict[str, int] = {}
        self.data_quality_lines = 0
        self.merchandise_lines = 0
        self._K = K

    def add(self, block: dict) -> None:
        """Count one block of the generator (the dict :func:`core.generate_data.generator.draw_block` returns)."""
        plan = self.plan
        P, D = len(plan.persona_names), plan.n_days
        M = len(plan.catalog.departments)
        c, o, lines = block["customers"], block["orders"], block["lines"]
        persona = c["persona"]
        self.customers += np.bincount(persona, minlength=P)  # the persona each customer started as
        self.customers_at_end += np.bincount(o["to"], minlength=P)
        end = np.where(o["dropped"], o["last_day"], D - 1)
        exposure_end = np.where(o["dropped"], o["last_day"] - 1, D - 1)
        # A life event on day e splits a customer's time: before it they count for their first
        # persona, from it for their new one, at their new visit rate.
        event, after, rate_after = o["event_day"], o["to"], o["rate_after"]
        before_months = (np.minimum(end, event) - o["first_day"]) / DAYS_PER_MONTH
        after_months = np.maximum(end - event, 0) / DAYS_PER_MONTH
        self.active_months += (np.bincount(persona, weights=before_months, minlength=P)
                               + np.bincount(after, weights=after_months, minlength=P))
        # Visit rates are measured on the visits after each customer's first: those follow the
        # calendar and scenarios, while a first visit marks when the customer was first seen.
        starts = o["first_day"] + 1
        # Exposure is weighted by each customer's own visit rate: frequent visitors use up their
        # purchases sooner, so the mix of customers still active changes over the window.
        for who, rate, low, high in ((persona, c["rate"], starts, np.minimum(exposure_end, event - 1)),
                                     (after, rate_after, np.maximum(starts, event), exposure_end)):
            live = low <= high
            np.add.at(self.active_by_day, (who[live], low[live]), rate[live])
            np.add.at(self.active_by_day, (who[live], high[live] + 1), -rate[live])
        # A dropped customer's last visit ends their exposure: given it, the visits between are
        # spread by the calendar alone, so it is left out too.
        order_persona = o["persona"]
        self.all_orders_by_persona += np.bincount(order_persona, minlength=P)
        cust = o["customer"]
        later = np.r_[False, cust[1:] == cust[:-1]]
        self.extra_orders += np.bincount(order_persona[later], minlength=P)
        last = np.r_[cust[1:] != cust[:-1], True] & o["dropped"][cust]
        counted = later & ~last
        self.orders_by_day += np.bincount(order_persona[counted] * D + o["day"][counted],
                                          minlength=P * D).reshape(P, D)
        self._add_life_events(block)
        self._add_basics_and_missions(block)

        line_persona = lines["persona"]  # whom the line was bought for (a household member's persona)
        line_day = o["day"][lines["order"]]
        dept = lines["merch_dept"]
        key = line_persona * M + dept
        self.lines += np.bincount(key, minlength=P * M).reshape(P, M)
        self.spend += np.bincount(key, weights=lines["amount"], minlength=P * M).reshape(P, M)
        self._add_mixes(block, line_persona, dept)
        order_value = np.bincount(lines["order"], weights=lines["amount"], minlength=len(o["day"]))
        has_lines = np.bincount(lines["order"], minlength=len(o["day"])) > 0
        self.merch_orders += np.bincount(order_persona, weights=has_lines, minlength=P)
        self.merch_value += np.bincount(order_persona, weights=order_value, minlength=P)
        in_window = line_day + block["return_delay"][lines["order"]] < D
        self.dept_lines += np.bincount(dept[in_window], minlength=M)
        self.dept_returned += np.bincount(dept[block["returned"]], minlength=M)
        self.dept_expected_returns += np.bincount(dept[in_window], weights=lines["p_return"][in_window],
                                                  minlength=M)
        day_key = line_persona * D + line_day
        self.lines_by_day += np.bincount(day_key, minlength=P * D).reshape(P, D)
        self.discounted_by_day += np.bincount(day_key, weights=lines["discount"] > 0,
                                              minlength=P * D).reshape(P, D)
        self.lines_by_day_dept += np.bincount(day_key * M + dept, minlength=P * D * M).reshape(P, D, M)
        if self.focus_classes:
            lookup = np.full(self._K, -1)
            lookup[self.focus_classes] = np.arange(len(self.focus_classes))
            hit = lookup[lines["class_row"]]
            rows = hit >= 0
            F = len(self.focus_classes)
            self.class_by_day += np.bincount((line_persona[rows] * D + line_day[rows]) * F + hit[rows],
                                             minlength=P * D * F).reshape(P, D, F)
        self.merchandise_lines += len(dept)
        self.data_quality_lines += int((lines["dept"] != dept).sum() + (lines["class"] != lines["class_code"]).sum()
                                       - ((lines["dept"] != dept) & (lines["class"] != lines["class_code"])).sum())
        other = block["other"]
        for kind, d in plan.special_departments.items():
            if ":" not in kind:
                self.other_lines[kind] = self.other_lines.get(kind, 0) + int((other["dept"] == d).sum())

    def _add_mixes(self, block: dict, line_persona: np.ndarray, dept: np.ndarray) -> None:
        """Counts behind the mix checks: classes, tiers, clustering of lines, per-customer spread."""
        P, K, M = len(self.plan.persona_names), self._K, len(self.plan.catalog.departments)
        c, lines = block["customers"], block["lines"]
        slot_persona = c["slots"]["persona"]
        n_slots = len(slot_persona)
        self.class_lines += np.bincount(line_persona * K + lines["class_row"], minlength=P * K).reshape(P, K)
        self.drawn_class_lines += np.bincount(line_persona * K + lines["class_drawn"], minlength=P * K).reshape(P, K)
        self.tier_lines += np.bincount(line_persona * 3 + lines["tier"], minlength=P * 3).reshape(P, 3)
        per_slot = np.bincount(lines["slot"], minlength=n_slots)
        self.slot_lines_sq += np.bincount(slot_persona, weights=per_slot.astype(float) ** 2, minlength=P)
        # Lines of one order for one person share its main department: they count as a cluster.
        group = lines["order"] * n_slots + lines["slot"]
        uniques, sizes = _runs(np.sort(group, kind="stable"))  # lines are in order order: nearly sorted
        self.group_lines_sq += np.bincount(slot_persona[uniques % n_slots], weights=sizes.astype(float) ** 2,
                                           minlength=P)
        # Spread between customers: the department mixes of those who shop for themselves alone.
        n = len(c["persona"])
        own = np.bincount(lines["slot"] * M + dept, minlength=n_slots * M).reshape(n_slots, M)[:n]
        total = own.sum(axis=1)
        keep = (total >= MIN_LINES_FOR_SPREAD) & ~c["household"] & self._single_persona(block)
        share = own[keep] / total[keep, None]
        persona = c["persona"][keep]
        self.spread_customers += np.bincount(persona, minlength=P)
        # The noise of each customer's share from their finite lines, to take out of the spread: binomial,
        # times the design effect of lines of one order sharing its main department (basket_focus each,
        # so two lines of an order correlate by basket_focus squared).
        square_sums = np.bincount(uniques % n_slots, weights=sizes.astype(float) ** 2, minlength=n_slots)[:n]
        focus = self.plan.cfg.basket_focus
        n_lines = total[keep].astype(float)
        design = 1 + focus**2 * (square_sums[keep] - n_lines) / n_lines
        noise = share * (1 - share) / (n_lines[:, None] - 1) * design[:, None]
        for d in range(M):
            self.spread_sum[:, d] += np.bincount(persona, weights=share[:, d], minlength=P)
            self.spread_sq[:, d] += np.bincount(persona, weights=share[:, d] ** 2, minlength=P)
            self.spread_noise[:, d] += np.bincount(persona, weights=noise[:, d], minlength=P)
        eligible = self.plan.member_count[c["persona"]] > 0
        self.household_eligible += np.bincount(c["persona"][eligible], minlength=P)
        self.households += np.bincount(c["persona"][c["household"]], minlength=P)

    @staticmethod
    def _single_persona(block: dict) -> np.ndarray:
        """Customers who kept one persona through the history."""
        return block["orders"]["event"] < 0

    def _add_basics_and_missions(self, block: dict) -> None:
        """Counts behind the replenishment and mission checks."""
        plan, lines, o = self.plan, block["lines"], block["orders"]
        self.replenishment_due += block["replenishment_due"]["due"]
        self.replenishment_bought += block["replenishment_due"]["bought"]
        # How regular repeat purchases are: the CV of the days between a slot's purchases of one usual
        # class, for basics and for the other usual classes (pairs with at least 4 purchase days).
        day = o["day"][lines["order"]]
        # Measured on the first SPREAD_SAMPLE customers of each block (slots of their own): a
        # description, not a check, and sorting every line's day cost a fifth of the report's time.
        usual = lines["usual"] & (lines["slot"] < SPREAD_SAMPLE)
        width = plan.n_days + 1
        # A plain sort and its runs: np.unique hashes first, and cost four times as much here.
        packed, _ = _runs(np.sort((lines["slot"][usual] * self._K + lines["class_row"][usual]) * width + day[usual]))
        pairs = np.stack([packed // width, packed % width])
        if pairs.shape[1] > 1:
            same = pairs[0, 1:] == pairs[0, :-1]
            gaps = np.diff(pairs[1]).astype(float)[same]
            owner = pairs[0, 1:][same]
            ids, sizes = _runs(owner)  # owners come sorted, with the packed values
            where = np.repeat(np.arange(len(ids)), sizes)
            count = np.bincount(where)
            mean = np.bincount(where, weights=gaps) / count
            sd = np.sqrt(np.maximum(np.bincount(where, weights=gaps**2) / count - mean**2, 0.0))
            enough = count >= 3
            cv = sd[enough] / np.maximum(mean[enough], 1e-9)
            is_basic = ~np.isnan(plan.basic_cycle[ids[enough] % self._K, 0])
            for row, mask in ((0, is_basic), (1, ~is_basic)):
                self.interval_cv[row] += np.bincount(np.digitize(cv[mask], CV_BINS), minlength=len(CV_BINS) + 1)
        # Missions: orders holding the anchor, those of them with a free line in a companion's department,
        # those holding a companion; and orders without the anchor holding a companion.
        if len(plan.mission_anchor):
            anchor, eligible, holds, drawn = self._mission_flags(lines, len(o["day"]))
            for m in range(len(plan.mission_anchor)):
                a, e, h, d = ((flags & (1 << m)) != 0 for flags in (anchor, eligible, holds, drawn))
                self.mission_counts[m] += [a.sum(), (a & e).sum(), (a & e & h).sum(), (~a & e).sum(),
                                           (~a & e & h).sum(), (a & e & d).sum()]

    def _mission_flags(self, lines: dict, n_orders: int) -> tuple[np.ndarray, ...]:
        """Per order, one bit per mission: holds its anchor; has a free line (in a companion's department,
        not the anchor, not a replenished basic); holds a companion; held one as drawn, before missions.

        One pass over the lines for all missions at once: a pass per mission and flag was a third
        of the report's time.
        """
        plan, n_depts = self.plan, len(self.plan.catalog.departments)
        if len(plan.mission_anchor) > 64:  # more missions than bits: one mission at a time
            return self._mission_flags_by_mission(lines, n_orders)
        anchor_of = np.zeros(self._K, dtype=np.uint64)
        companion_of = np.zeros(self._K, dtype=np.uint64)
        department_of = np.zeros(n_depts, dtype=np.uint64)
        for m, anchor in enumerate(plan.mission_anchor):
            bit = np.uint64(1) << np.uint64(m)
            anchor_of[anchor] |= bit
            companion_of[plan.mission_classes[m][:, 1]] |= bit
            department_of[plan.mission_classes[m][:, 0]] |= bit
        cls = lines["class_row"]
        free = department_of[lines["merch_dept"]] & ~anchor_of[cls]
        free[lines["replenished"]] = 0
        per_line = (anchor_of[cls], free, companion_of[cls], companion_of[lines["class_drawn"]])
        # Lines are in order order: OR each order's run of lines.
        order = lines["order"]
        starts = np.flatnonzero(np.r_[True, order[1:] != order[:-1]]) if len(order) else np.zeros(0, np.int64)
        out = []
        for values in per_line:
            flags = np.zeros(n_orders, dtype=np.uint64)
            if len(starts):
                flags[order[starts]] = np.bitwise_or.reduceat(values, starts)
            out.append(flags)
        return tuple(out)

    def _mission_flags_by_mission(self, lines: dict, n_orders: int) -> tuple[np.ndarray, ...]:
        """:meth:`_mission_flags` for up to any number of missions, as Python integers (object arrays)."""
        plan, out = self.plan, [np.zeros(n_orders, dtype=object) for _ in range(4)]
        for m, anchor in enumerate(plan.mission_anchor):
            companions = plan.mission_classes[m]
            in_departments = np.zeros(len(plan.catalog.departments), dtype=bool)
            in_departments[companions[:, 0]] = True
            is_companion = np.zeros(self._K, dtype=bool)
            is_companion[companions[:, 1]] = True
            free = in_departments[lines["merch_dept"]] & (lines["class_row"] != anchor) & ~lines["replenished"]
            for flags, rows in zip(out, (lines["class_row"] == anchor, free, is_companion[lines["class_row"]],
                                         is_companion[lines["class_drawn"]])):
                hit = np.zeros(n_orders, dtype=bool)
                hit[lines["order"][rows]] = True
                flags[hit] += 1 << m
        return tuple(out)

    def _add_life_events(self, block: dict) -> None:
        """Per configured life event: years its customers were exposed to it, and the events drawn."""
        plan = self.plan
        c, o = block["customers"], block["orders"]
        for j in range(len(plan.event_rate)):
            eligible = ((c["persona"] == plan.event_from[j]) & (c["age"] >= plan.event_age[j, 0])
                        & (c["age"] <= plan.event_age[j, 1]))
            self.event_years[j] += float(o["at_risk_years"][eligible].sum())
            self.event_counts[j] += int((o["event"] == j).sum())

    def merge(self, other: "GenerationReport") -> None:
        """Add the counts of ``other`` (a report of other blocks of the same plan, possibly :meth:`compact`)."""
        for name, value in vars(other).items():
            if name in ("plan", "config_personas", "config_scenarios", "config_generate"):
                continue
            if isinstance(value, np.ndarray):
                getattr(self, name).__iadd__(value)
            elif isinstance(value, SparseCounts):
                # The entries left out are zeros: adding them changes nothing, so the sums are those of
                # a dense merge, bit for bit.
                getattr(self, name).reshape(-1)[value.index] += value.values
            elif isinstance(value, dict):
                mine = getattr(self, name)
                for key, count in value.items():
                    mine[key] = mine.get(key, 0) + count
            elif isinstance(value, int) and not isinstance(value, bool) and name not in ("_K",):
                setattr(self, name, getattr(self, name) + value)

    def compact(self) -> "GenerationReport":
        """This report, to be sent to another process and merged there: configs dropped, mostly-zero
        arrays kept as their non-zero entries.

        A block touches a few of the (persona, day, department) cells: sending them whole was 1.3 MB a
        block through the workers' pipe, several times the block's customers.
        """
        self.plan = self.config_personas = self.config_scenarios = self.config_generate = None
        for name, value in list(vars(self).items()):
            if isinstance(value, np.ndarray) and value.size >= 4096:
                index = np.flatnonzero(value)
                if len(index) * 3 < value.size:
                    setattr(self, name, SparseCounts(index.astype(np.int32), value.reshape(-1)[index]))
        return self

    # ------------------------------------------------------------------------------------------

    def finish(self) -> dict:
        """The report as JSON-ready data; failed checks are also in :attr:`failures`."""
        plan, tol = self.plan, self.plan.cfg.report_tolerances
        self.failures: list[str] = []
        report = {
            "customers": int(self.customers.sum()),
            "persona_mix": self._persona_mix(tol),
            "department_share": self._department_share(tol),
            "brand_tier_share": self._tier_share(tol),
            "usual_class_share": self._usual_class_share(tol),
            "customer_spread": self._spread(),
            "households": self._households(tol),
            "life_events": self._life_events(tol),
            "replenishment": self._replenishment(tol),
            "missions": self._missions(tol),
            "order_value_and_visits": self._ranges(tol),
            "return_rates": self._returns(tol),
            "scenarios": self._scenarios(tol),
            "non_merchandise_lines": {**self.other_lines, "merchandise_lines": self.merchandise_lines,
                                      "data_quality_lines": self.data_quality_lines,
                                      "data_quality_share": round(self.data_quality_lines
                                                                  / max(self.merchandise_lines, 1), 5)},
            "tolerances": {k: getattr(tol, k) for k in tol.__dataclass_fields__},
        }
        report["checks_failed"] = list(self.failures)
        report["passed"] = not self.failures
        return report

    def _persona_mix(self, tol) -> dict:
        plan = self.plan
        weights = np.array([plan.personas[p].weight for p in plan.persona_names])
        expected = weights / weights.sum() * self.customers.sum()
        test_rows = expected > 0
        p_value = (float(stats.chisquare(self.customers[test_rows], expected[test_rows]).pvalue)
                   if test_rows.sum() > 1 else 1.0)
        ok = p_value >= tol.persona_mix_p_value
        if not ok:
            self.failures.append(f"persona mix: chi-square p = {p_value:.2g} < {tol.persona_mix_p_value} "
                                 f"(realised {dict(zip(plan.persona_names, self.customers.tolist()))})")
        return {"chi_square_p_value": round(p_value, 6), "passed": bool(ok),
                "personas": {p: {"configured_share": round(float(w / weights.sum()), 4),
                                 "realised_share": round(float(n / max(self.customers.sum(), 1)), 4),
                                 "customers": int(n), "customers_at_end_of_history": int(end)}
                             for p, w, n, end in zip(plan.persona_names, weights, self.customers,
                                                     self.customers_at_end)}}

    def _department_share(self, tol) -> dict:
        """Each persona's department line shares against personas.yml (with its scenarios) and the variation.

        The expected share is worked out from the config alone: the persona's
        preferences, boosted on each day by the scenarios that config makes
        active then, averaged over the Dirichlet spread of customers
        (:func:`dirichlet_boosted_mean`), weighted by the lines realised each day.
        """
        plan, out = self.plan, {}
        expected_daily = self._expected_department_shares()  # (P, D, M)
        alpha = plan.cfg.customer_variation.department_concentration
        for p, name in enumerate(plan.persona_names):
            total = self.lines[p].sum()
            pref = self.config_personas[name].department_preferences
            expected_lines = (self.lines_by_day[p][:, None] * expected_daily[p]).sum(axis=0)
            rows = {}
            checked = total >= tol.min_group_size
            for d, dept in enumerate(plan.catalog.departments):
                configured = pref.get(dept, 0.0)
                expected = expected_lines[d] / max(total, 1)
                realised = self.lines[p, d] / max(total, 1)
                if configured == 0 and realised == 0:
                    continue
                allowed = tol.share_z * self._share_error(p, configured, alpha, total)
                # A configured department nobody bought fails even when customers differ so much
                # that its pooled share is uncertain: MIN_EXPECTED_LINES expected lines and none seen.
                vanished = expected_lines[d] >= MIN_EXPECTED_LINES and self.lines[p, d] == 0
                ok = not checked or (abs(realised - expected) <= allowed and not vanished)
                if not ok:
                    self.failures.append(f"{name}: {dept} is {realised:.4f} of lines, personas.yml implies "
                                         f"{expected:.4f} (configured {configured:.3f}) +- {allowed:.4f}")
                rows[dept] = {"configured_line_share": round(configured, 4),
                              "expected_line_share_with_scenarios": round(float(expected), 4),
                              "realised_line_share": round(float(realised), 4),
                              "tolerance": round(float(allowed), 4),
                              "realised_spend_share": round(float(self.spend[p, d] / max(self.spend[p].sum(), 1)), 4),
                              "passed": bool(ok)}
            out[name] = {"lines": int(total), "departments": rows}
        return out

    def _share_error(self, p: int, share: float, alpha: float, total: float) -> float:
        """Standard error of a persona's pooled line share whose customers' shares are Dirichlet(alpha) draws.

        Between customers: ``share (1 - share) / (alpha + 1)`` per customer,
        weighted by their squared line counts; within: lines of one order for
        one person come as a cluster (their sum of squares).
        """
        if total <= 0:
            return 0.0
        spread = share * (1 - share)
        between = spread / (alpha + 1) * self.slot_lines_sq[p] / total**2 if np.isfinite(alpha) else 0.0
        within = spread * self.group_lines_sq[p] / total**2
        return float(np.sqrt(between + within))

    def _expected_department_shares(self) -> np.ndarray:
        """(personas, days, departments): each day's expected line share, from personas.yml alone."""
        plan = self.plan
        departments = plan.catalog.departments
        alpha = plan.cfg.customer_variation.department_concentration
        active = config_scenario_days(self.config_scenarios, plan.data.history_start, plan.n_days)
        out = np.zeros((len(plan.persona_names), plan.n_days, len(departments)))
        names = list(self.config_scenarios)
        for p, name in enumerate(plan.persona_names):
            persona = self.config_personas[name]
            base = np.array([persona.department_preferences.get(d, 0.0) for d in departments])
            attached = [s for s, sn in enumerate(names) if name in self.config_scenarios[sn].personas]
            combos = np.zeros(plan.n_days, dtype=np.int64)
            for bit, s in enumerate(attached):
                combos |= active[s].astype(np.int64) << bit
            for combo in np.unique(combos):
                boost = np.ones(len(departments))
                for bit, s in enumerate(attached):
                    if combo >> bit & 1:
                        for dept, factor in self.config_scenarios[names[s]].department_boost.items():
                            boost[departments.index(dept)] *= factor
                if (base * boost).sum() <= 0:
                    boost = np.ones(len(departments))
                out[p, combos == combo] = dirichlet_boosted_mean(alpha * base, boost)
        return out

    def _tier_share(self, tol) -> dict:
        """Brand-tier line shares per persona against brand_tier_affinity (classes lacking a tier left out)."""
        plan, out = self.plan, {}
        alpha = plan.cfg.customer_variation.brand_tier_concentration
        default = plan.cfg.brand_tier_affinity
        patterns, pattern_of = np.unique(plan.class_tiers, axis=0, return_inverse=True)
        pattern_of = pattern_of.ravel()
        for p, name in enumerate(plan.persona_names):
            mix = self.config_personas[name].brand_tier_affinity or default
            configured = np.array([mix.get(t, 0.0) for t in BRAND_TIERS])
            per_pattern = np.vstack([dirichlet_boosted_mean(alpha * configured, b + 1e-9) for b in patterns])
            expected_lines = (self.class_lines[p][:, None] * per_pattern[pattern_of]).sum(axis=0)
            total = self.tier_lines[p].sum()
            rows = {}
            for t, tier in enumerate(BRAND_TIERS):
                expected = expected_lines[t] / max(total, 1)
                realised = self.tier_lines[p, t] / max(total, 1)
                allowed = tol.share_z * self._share_error(p, configured[t], alpha, total)
                ok = total < tol.min_group_size or abs(realised - expected) <= allowed
                if not ok:
                    self.failures.append(f"{name}: brand tier {tier} is {realised:.4f} of lines, personas.yml "
                                         f"implies {expected:.4f} +- {allowed:.4f}")
                rows[tier] = {"configured_line_share": round(float(configured[t]), 4),
                              "expected_line_share": round(float(expected), 4),
                              "realised_line_share": round(float(realised), 4),
                              "tolerance": round(float(allowed), 4), "passed": bool(ok)}
            out[name] = rows
        return out

    def _usual_class_share(self, tol) -> dict:
        """Share of a class-level department's lines in the persona's listed classes, against the config.

        Outside the listed classes go the ``exploration_share`` of lines (spread over all the
        department's classes) and, inside a scenario's window, its class focus. Judged on the
        classes as drawn from the customer's tastes: missions then turn some lines into their
        classes, which :meth:`_missions` checks.
        """
        plan, out = self.plan, {}
        cat = plan.catalog
        active = config_scenario_days(self.config_scenarios, plan.data.history_start, plan.n_days)
        names = list(self.config_scenarios)
        for p, name in enumerate(plan.persona_names):
            persona = self.config_personas[name]
            explore = plan.cfg.exploration_share if persona.exploration_share is None else persona.exploration_share
            rows = {}
            for dept, classes in persona.class_preferences.items():
                d = cat.departments.index(dept)
                members = cat.department_classes(dept)
                listed = {cat.class_row(dept, c) for c in classes}
                base = (1 - explore) + explore * len(listed) / len(members)
                share_by_day = np.full(plan.n_days, base)
                focus = [(s, self.config_scenarios[sn].class_focus[dept]) for s, sn in enumerate(names)
                         if name in self.config_scenarios[sn].personas and dept in self.config_scenarios[sn].class_focus]
                for day in np.flatnonzero(np.any([active[s] for s, _ in focus], axis=0)) if focus else []:
                    on = [f for s, f in focus if active[s, day]]
                    share_by_day[day] = _focused_share(base, on, cat, dept, listed)
                dept_lines = self.lines_by_day_dept[p, :, d]
                total = dept_lines.sum()
                expected = float((dept_lines * share_by_day).sum() / max(total, 1))
                realised = float(self.drawn_class_lines[p, sorted(listed)].sum() / max(total, 1))
                allowed = tol.share_z * float(np.sqrt(expected * (1 - expected) / max(total, 1)))
                ok = total < tol.min_group_size or abs(realised - expected) <= allowed
                if not ok:
                    self.failures.append(f"{name}: {realised:.4f} of {dept} lines are in its listed classes, "
                                         f"personas.yml implies {expected:.4f} +- {allowed:.4f}")
                rows[dept] = {"expected_share_in_listed_classes": round(expected, 4),
                              "realised_share_in_listed_classes": round(realised, 4),
                              "tolerance": round(allowed, 4), "lines": int(total), "passed": bool(ok)}
            out[name] = rows
        return out

    def _spread(self) -> dict:
        """How much customers of one persona differ: between-customer SD of department shares.

        Measured on customers with at least :data:`MIN_LINES_FOR_SPREAD` lines who shop for
        themselves alone and keep one persona. The observed SD includes the noise of a finite
        number of lines; the between-customer SD takes out its binomial part (lines drawn one
        by one, and lines of one order sharing its main department).
        Below 0.8 of the SD ``department_concentration`` implies fails: customers vary less
        than asked.
        """
        plan, out = self.plan, {}
        alpha = plan.cfg.customer_variation.department_concentration
        min_group = plan.cfg.report_tolerances.min_group_size
        for p, name in enumerate(plan.persona_names):
            n = self.spread_customers[p]
            pref = self.config_personas[name].department_preferences
            configured = np.array([pref.get(d, 0.0) for d in plan.catalog.departments])
            used = configured > 0
            if n < 2:
                out[name] = {"customers": int(n), "passed": True, "note": "too few customers to measure"}
                continue
            mean = self.spread_sum[p] / n
            observed = np.maximum(self.spread_sq[p] / n - mean**2, 0.0) * n / (n - 1)
            between = np.sqrt(np.maximum(observed - self.spread_noise[p] / n, 0.0))
            wanted = np.sqrt(configured * (1 - configured) / (alpha + 1))
            weighted = {label: float((configured[used] * v[used]).sum())
                        for label, v in (("observed", np.sqrt(observed)), ("between", between),
                                         ("wanted", wanted))}
            ok = n < min_group or weighted["between"] >= 0.8 * weighted["wanted"]
            if not ok:
                self.failures.append(f"{name}: customers' department shares differ by {weighted['between']:.3f} "
                                     f"(SD between customers, share-weighted), below 0.8 x the "
                                     f"{weighted['wanted']:.3f} department_concentration {alpha:g} asks for")
            out[name] = {"customers": int(n),
                         "observed_sd_share_weighted": round(weighted["observed"], 4),
                         "between_customer_sd_share_weighted": round(weighted["between"], 4),
                         "configured_sd_share_weighted": round(weighted["wanted"], 4),
                         "between_customer_sd": {d: round(float(v), 4) for d, v, u in
                                                 zip(plan.catalog.departments, between, used) if u},
                         "passed": bool(ok)}
        return out

    def _life_events(self, tol) -> dict:
        """Realised life events per configured one against its yearly rate (personas.yml ``life_events``).

        Expected events are the rate times the years its customers were exposed (from the day
        after their first visit until their event or the end of the history); the count is
        Poisson, so it may stray ``share_z`` square roots of the expectation.
        """
        plan, out = self.plan, {}
        names = plan.persona_names
        configured = {(name, e.to): e for name in names for e in self.config_personas[name].life_events}
        for j in range(len(plan.event_rate)):
            source, target = names[plan.event_from[j]], names[plan.event_to[j]]
            event = configured.get((source, target))
            rate = event.yearly_rate if event is not None else 0.0
            expected = rate * self.event_years[j]
            realised = self.event_counts[j]
            allowed = tol.share_z * np.sqrt(max(expected, 1.0))
            ok = abs(realised - expected) <= allowed
            if not ok:
                self.failures.append(f"life event {source} -> {target}: {int(realised)} events in "
                                     f"{self.event_years[j]:.0f} customer-years, personas.yml's yearly rate {rate} "
                                     f"implies {expected:.1f} +- {allowed:.1f}")
            out[f"{source} -> {target}"] = {
                "configured_yearly_rate": rate,
                "realised_yearly_rate": round(float(realised / max(self.event_years[j], 1e-9)), 4),
                "customer_years_at_risk": round(float(self.event_years[j]), 1), "events": int(realised),
                "expected_events": round(float(expected), 1), "tolerance": round(float(allowed), 1),
                "passed": bool(ok)}
        return out

    def _replenishment(self, tol) -> dict:
        """Basics bought again when due, against ``replenishment.probability``; how regular repeats are."""
        q = self.config_generate.replenishment.probability
        due, bought = self.replenishment_due, self.replenishment_bought
        realised = bought / due if due else 0.0
        allowed = tol.share_z * np.sqrt(q * (1 - q) / max(due, 1))
        # A due basic is bought with the probability, or drawn anyway: at least q, one-sided.
        ok = due < tol.min_group_size or realised >= q - allowed
        if not ok:
            self.failures.append(f"replenishment: {realised:.4f} of due basics bought on a visit to their "
                                 f"department, configured at least {q} - {allowed:.4f}")

        def median_cv(row: np.ndarray) -> float | None:
            if row.sum() == 0:
                return None
            index = int(np.searchsorted(np.cumsum(row), row.sum() / 2))
            edges = np.r_[0.0, CV_BINS]
            return round(float(edges[min(index, len(CV_BINS))]), 3)

        return {"configured_probability": q, "due_visits": int(due), "bought": int(bought),
                "realised_share": round(realised, 4), "tolerance": round(float(allowed), 4),
                "median_interval_cv_basics": median_cv(self.interval_cv[0]),
                "median_interval_cv_other_usual_classes": median_cv(self.interval_cv[1]),
                "repeat_pairs": {"basics": int(self.interval_cv[0].sum()),
                                 "other_usual_classes": int(self.interval_cv[1].sum())},
                "passed": bool(ok)}

    def _missions(self, tol) -> dict:
        """Per mission: how often an order with its anchor holds a companion, against ``missions.probability``."""
        q = self.config_generate.missions.probability
        out = {}
        for m, name in enumerate(self.plan.cfg.missions.sets):
            anchor, eligible, holds, other, other_holds, natural = self.mission_counts[m]
            realised = holds / eligible if eligible else 0.0
            baseline = other_holds / other if other else 0.0
            # An order with the anchor and a free line in the mission's departments becomes the mission
            # with probability q (then it holds a companion); otherwise it holds one as often as drawn.
            drawn = natural / eligible if eligible else 0.0
            expected = q + (1 - q) * drawn
            allowed = (tol.share_z * np.sqrt(expected * (1 - expected) / max(eligible, 1))
                       + MISSION_OVERLAP_ALLOWANCE)
            ok = eligible < tol.min_group_size or abs(realised - expected) <= allowed
            if not ok:
                self.failures.append(f"mission {name}: {realised:.4f} of orders with its anchor and a line in its "
                                     f"departments hold one of its classes; probability {q} implies "
                                     f"{expected:.4f} +- {allowed:.4f}")
            out[name] = {"orders_with_anchor": int(anchor), "of_them_with_a_line_in_its_departments": int(eligible),
                         "share_holding_a_companion": round(float(realised), 4),
                         "share_holding_one_as_drawn": round(float(drawn), 4),
                         "expected_share": round(float(expected), 4),
                         "share_without_the_anchor": round(float(baseline), 4),
                         "lift": round(float(realised / baseline), 2) if baseline else None,
                         "tolerance": round(float(allowed), 4), "passed": bool(ok)}
        return out

    def _households(self, tol) -> dict:
        """Share of customers shopping for a household member, against generate_data.households.share."""
        share = self.config_generate.households.share
        eligible, households = float(self.household_eligible.sum()), float(self.households.sum())
        realised = households / eligible if eligible else 0.0
        allowed = tol.share_z * np.sqrt(share * (1 - share) / max(eligible, 1))
        ok = eligible < tol.min_group_size or abs(realised - share) <= allowed
        if not ok:
            self.failures.append(f"households: {realised:.4f} of eligible customers shop for a household member, "
                                 f"configured {share} +- {allowed:.4f}")
        return {"configured_share": share, "realised_share": round(realised, 4),
                "eligible_customers": int(eligible), "household_customers": int(households),
                "share_of_all_customers": round(households / max(float(self.customers.sum()), 1), 4),
                "tolerance": round(float(allowed), 4), "passed": bool(ok)}

    def _ranges(self, tol) -> dict:
        plan, out = self.plan, {}
        slack = tol.range_relative
        intensity = self._visit_intensity()
        for p, name in enumerate(plan.persona_names):
            profile = plan.personas[name].spending_profile
            aov = self.merch_value[p] / max(self.merch_orders[p], 1)
            visits = self.extra_orders[p] / max(self.active_months[p], 1e-9)
            checked = self.customers[p] >= tol.min_group_size
            rows = {}
            for label, value, (low, high), scale in (
                    ("average_order_value", aov, profile.avg_order_value, 1.0),
                    ("visits_per_month", visits, profile.frequency_per_month, intensity[p])):
                ok = not checked or low * scale * (1 - slack) <= value <= high * scale * (1 + slack)
                if not ok:
                    scaled = "" if scale == 1.0 else f" x {scale:.2f} (calendar and scenarios while active)"
                    self.failures.append(f"{name}: {label} {value:.2f} is outside [{low}, {high}]{scaled} "
                                         f"+- {slack:.0%}")
                rows[label] = {"realised": round(float(value), 3), "configured": [low, high], "passed": bool(ok)}
            out[name] = rows
        return out

    def _visit_intensity(self) -> np.ndarray:
        """Per persona: the mean visit intensity over the days its customers could visit, 1 = the configured rate.

        Over a long history scenarios and the calendar average out; a short one can lie
        mostly inside a scenario (Christmas week in the January sales: visits x 1.25) or on a
        closed day, and the configured visit rate is then realised that much higher or lower.
        Days are weighted by the customers exposed, each by their own visit rate (as in
        :meth:`_scenarios`).
        """
        plan = self.plan
        exposed = np.cumsum(self.active_by_day, axis=1)[:, :-1]
        visit_mult = np.array([r.visit_multiplier for r in plan.regimes])[plan.day_regime]
        exposure = exposed.sum(axis=1)
        boosted = (exposed * plan.base_intensity[None, :] * visit_mult).sum(axis=1)
        return np.where(exposure > 0, boosted / np.where(exposure > 0, exposure, 1.0), 1.0)

    def _returns(self, tol) -> dict:
        plan, cfg, out = self.plan, self.plan.cfg, {}
        for d, dept in enumerate(plan.catalog.departments):
            n = self.dept_lines[d]
            if n == 0:
                continue
            realised = self.dept_returned[d] / n
            expected = self.dept_expected_returns[d] / n
            # Lines are returned one by one with their own chance: a binomial error, share_z of them wide,
            # never narrower than return_rate_abs.
            allowed = max(tol.share_z * float(np.sqrt(expected * (1 - expected) / n)), tol.return_rate_abs)
            ok = n < tol.min_group_size or abs(realised - expected) <= allowed
            if not ok:
                self.failures.append(f"returns: {dept} {realised:.3f} of lines, expected {expected:.3f} "
                                     f"+- {allowed:.4f}")
            out[dept] = {"configured_rate": cfg.department_return_rates.get(dept, cfg.return_rate),
                         "expected_rate_with_online": round(float(expected), 4),
                         "realised_rate": round(float(realised), 4), "lines": int(n), "passed": bool(ok)}
        return out

    def _scenarios(self, tol) -> dict:
        """Uplift inside each window against outside, realised and expected.

        Personas can be in several scenarios at once (a sale inside a
        season), so the expected uplift is worked out from the plan's day
        by day regimes with the realised exposure (active customers, lines),
        and the realised one must come within ``scenario_uplift_abs`` (or a
        quarter of the expected uplift, when larger) of it.
        """
        plan, out = self.plan, {}
        active = np.cumsum(self.active_by_day, axis=1)[:, :-1]
        base = plan.base_intensity
        regimes = plan.regimes
        visit_mult = np.array([r.visit_multiplier for r in regimes])[plan.day_regime]
        shares = self._expected_department_shares()  # (P, D, M)
        sale = np.array([r.sale_share for r in regimes])[plan.day_regime]
        promo = plan.cfg.promotion_share
        discount_chance = 1 - (1 - promo) * (1 - sale)
        for s, name in enumerate(plan.scenario_names):
            sc = plan.scenarios[name]
            rows = [plan.persona_names.index(p) for p in sc.personas]
            inside = plan.scenario_days[s]
            result: dict = {"window": [sc.start, sc.end], "personas": list(sc.personas), "effects": {}}

            noise: dict[str, float] = {}

            all_lines = self.lines_by_day[rows].sum()
            all_orders = self.all_orders_by_persona[rows].sum()
            lines_per_order = max(float(all_lines / all_orders), 1.0) if all_orders else 1.0

            # Customers differ in their mixes (customer_variation), so the lines of one customer inside
            # (or outside) the window move together: their clustering adds to that of baskets, the more
            # the fewer customers share the window's lines (their squared line counts, in proportion).
            customer_cluster = self.slot_lines_sq[rows].sum() / max(self.lines[rows].sum(), 1.0)
            in_share = float(self.lines_by_day[rows][:, inside].sum() / max(all_lines, 1.0))

            def ratio(numerator: np.ndarray, denominator: np.ndarray, label: str = "",
                      cluster: float = 1.0, concentration: float = np.inf) -> float | None:
                num_in, num_out = numerator[inside].sum(), numerator[~inside].sum()
                den_in, den_out = denominator[inside].sum(), denominator[~inside].sum()
                if min(den_in, den_out, num_out) <= 0:
                    return None
                value = float((num_in / den_in) / (num_out / den_out) - 1)
                if label:
                    # share_z standard errors of a ratio of two counts. Lines come in baskets (and
                    # baskets share a main department), so they count as orders, not as lines.
                    spread = customer_cluster / (concentration + 1)
                    cluster_in = cluster + in_share * spread
                    cluster_out = cluster + (1 - in_share) * spread
                    eff_in, eff_out = max(num_in / cluster_in, 1.0), max(num_out / cluster_out, 1.0)
                    noise[label] = tol.share_z * (1 + value) * float(np.sqrt(1 / eff_in + 1 / eff_out))
                return value

            def judge(label: str, configured: float, realised: float | None, expected: float | None,
                      sample: float) -> None:
                entry = {"configured_factor": float(configured),
                         "expected_uplift": None if expected is None else round(float(expected), 4),
                         "realised_uplift": None if realised is None else round(float(realised), 4)}
                if realised is None or expected is None:
                    entry.update(passed=True, note="no data on one side of the window")
                else:
                    allowed = max(tol.scenario_uplift_abs, 0.25 * abs(expected), noise.get(label, 0.0))
                    ok = sample < tol.min_group_size or abs(realised - expected) <= allowed
                    if not ok:
                        self.failures.append(f"scenario {name}: {label} uplift {realised:+.3f} inside the window, "
                                             f"expected {expected:+.3f} +- {allowed:.3f}")
                    entry["passed"] = bool(ok)
                result["effects"][label] = entry

            orders = self.orders_by_day[rows].sum(axis=0)
            exposure = (active[rows] * base[None, :]).sum(axis=0)
            boosted = (active[rows] * base[None, :] * visit_mult[rows]).sum(axis=0)
            if sc.visit_multiplier != 1.0:
                judge("visits", sc.visit_multiplier, ratio(orders, exposure, "visits"), ratio(boosted, exposure),
                      orders.sum())
            line_rows = self.lines_by_day[rows]
            lines = line_rows.sum(axis=0)
            for dept, factor in sc.department_boost.items():
                d = plan.catalog.departments.index(dept)
                dept_lines = self.lines_by_day_dept[rows][:, :, d].sum(axis=0)
                expected_lines = (line_rows * shares[rows][:, :, d]).sum(axis=0)
                judge(f"department {dept}", factor,
                      ratio(dept_lines, lines, f"department {dept}", lines_per_order,
                            plan.cfg.customer_variation.department_concentration), ratio(expected_lines, lines),
                      dept_lines.sum())
            for dept, focus in sc.class_focus.items():
                d = plan.catalog.departments.index(dept)
                dept_lines = self.lines_by_day_dept[rows][:, :, d].sum(axis=0)
                cols = [self.focus_classes.index(plan.catalog.class_row(dept, c)) for c in focus.classes]
                focus_lines = self.class_by_day[rows][:, :, cols].sum(axis=(0, 2))
                realised = ratio(focus_lines, dept_lines, f"classes {', '.join(focus.classes)}", lines_per_order,
                                 plan.cfg.customer_variation.class_concentration)
                # The classes' usual share is measured outside; inside, focus.share more of the lines go to them.
                usual = focus_lines[~inside].sum() / max(dept_lines[~inside].sum(), 1)
                expected = (focus.share + (1 - focus.share) * usual) / usual - 1 if usual > 0 else None
                judge(f"classes {', '.join(focus.classes)}", 1.0 + focus.share, realised, expected,
                      focus_lines.sum())
            if sc.discount_share > 0:
                discounted = self.discounted_by_day[rows].sum(axis=0)
                expected_discounted = (line_rows * discount_chance[rows]).sum(axis=0)
                judge("discounted lines", 1.0 + sc.discount_share,
                      ratio(discounted, lines, "discounted lines", lines_per_order),
                      ratio(expected_discounted, lines), discounted.sum())
            out[name] = result
        return out


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of sorted ``values`` and how often each occurs (``np.unique`` without its sort)."""
    if not len(values):
        return values, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    return values[starts], np.diff(np.r_[starts, len(values)])


def smallest_persona(plan: GenerationPlan) -> tuple[str, float]:
    """Name and share of customers of the persona with the smallest (non-zero) weight."""
    weights = {name: plan.personas[name].weight for name in plan.persona_names}
    weight, name = min((w, name) for name, w in weights.items() if w > 0)
    return name, weight / sum(weights.values())


def min_customers(plan: GenerationPlan) -> int:
    """Fewest customers for which the report judges every persona on enough of its own customers.

    ``report_tolerances.min_group_size`` customers expected in the
    :func:`smallest_persona`: below that, a few customers' habits make a
    persona's shares and rates, and chance alone can fail the checks.
    """
    return int(np.ceil(plan.cfg.report_tolerances.min_group_size / smallest_persona(plan)[1] - 1e-9))


def summary_lines(report: dict) -> list[str]:
    """A few lines for the console: what was made and whether it matches the config."""
    mix = report["persona_mix"]
    lines = [f"persona mix chi-square p = {mix['chi_square_p_value']:.3g} "
             f"({'ok' if mix['passed'] else 'FAILED'})"]
    worst = max((abs(v["realised_line_share"] - v["expected_line_share_with_scenarios"]), p, d)
                for p, rows in report["department_share"].items() for d, v in rows["departments"].items())
    lines.append(f"largest department share gap: {worst[0]:.3f} ({worst[1]}, {worst[2]})")
    effects = [(s, e, v["realised_uplift"]) for s, r in report["scenarios"].items()
               for e, v in r["effects"].items() if v.get("realised_uplift") is not None]
    lines.append("scenario uplifts: " + "; ".join(f"{s} {e} {u:+.0%}" for s, e, u in effects[:8]))
    status = "all checks passed" if report["passed"] else f"{len(report['checks_failed'])} check(s) FAILED"
    lines.append(status)
    return lines


def dirichlet_boosted_mean(alpha: np.ndarray, boost: np.ndarray) -> np.ndarray:
    """Mean of ``x * boost / sum(x * boost)`` for ``x`` Dirichlet(``alpha``): a boosted mix over customers.

    For gamma variables ``g``, ``E[g_d / sum(b g)] = int_0^inf E[g_d exp(-t sum(b g))] dt``,
    which is ``int_0^inf alpha_d / (1 + t b_d) prod_j (1 + t b_j)^-alpha_j dt``: one integral
    per mix, computed numerically. Without boosts (all ``b`` equal) it is ``alpha / sum(alpha)``;
    an infinite concentration gives the plain renormalised mix.
    """
    alpha = np.asarray(alpha, dtype=float)
    boost = np.asarray(boost, dtype=float)
    plain = alpha * boost / max(float((alpha * boost).sum()), 1e-300)
    if not np.all(np.isfinite(alpha)) or np.allclose(boost[alpha > 0], boost[alpha > 0][0]):
        return plain
    used = alpha > 0

    def integrand(x: float) -> np.ndarray:
        t = x / (1 - x)
        log_common = -(alpha[used] * np.log1p(t * boost[used])).sum()
        return alpha * boost / (1 + t * boost) * np.exp(log_common) / (1 - x) ** 2

    value, _ = integrate.quad_vec(integrand, 0.0, 1.0, epsabs=1e-10, epsrel=1e-8)
    return np.where(used, value, 0.0)


def _focused_share(base: float, focus: list, catalog, dept: str, listed: set[int]) -> float:
    """Share of lines in listed classes on a day with these class focuses (config order; the last hit wins)."""
    shares = [f.share for f in focus]
    result = (1 - max(shares)) * base
    for i, f in enumerate(focus):
        later = max(shares[i + 1:], default=0.0)
        hit = max(f.share - later, 0.0)
        in_listed = sum(catalog.class_row(dept, c) in listed for c in f.classes) / len(f.classes)
        result += hit * in_listed
    return result


def config_scenario_days(scenarios: dict[str, Scenario], start, n_days: int) -> np.ndarray:
    """(scenarios, days): whether each configured scenario is on, each day from ``start``."""
    days = pd.Timestamp(start) + pd.to_timedelta(np.arange(n_days), unit="D")
    key = days.month.to_numpy() * 100 + days.day.to_numpy()
    active = np.zeros((len(scenarios), n_days), dtype=bool)
    for s, scenario in enumerate(scenarios.values()):
        (m0, d0), (m1, d1) = scenario.days()
        lo, hi = m0 * 100 + d0, m1 * 100 + d1
        active[s] = (key >= lo) & (key <= hi) if lo <= hi else (key >= lo) | (key <= hi)
    return active
