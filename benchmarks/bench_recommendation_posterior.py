"""The ceiling of any model of the past lines: the generator's posterior for each customer's next classes.

    python benchmarks/bench_recommendation_posterior.py --config CONFIG --artifacts DIR [--alternatives 500]
                                                        [--draws 2000] [--customers 0] [--replicates 30]
                                                        [--k 5] [--window-days 182] [--seed 42] [--record]

The generator's truth (``bench_recommendation_ceiling.py``) ranks a customer's classes knowing their own drawn
tastes (department mix, usual classes and their weights), which no model of their lines can know. This benchmark
measures what the best model of the past lines could score: an approximately Bayes-optimal predictor that knows
the generator's whole prior (every draw distribution), and generously the customer's true persona, household
member's persona and share, and life event before the cut, but not their own taste draws. For each scored customer
it draws ``--alternatives`` customers' tastes from the same personas with the generator's own ``draw_tastes``
(other seeds), weights each by the likelihood of the customer's observed merchandise lines before the cut, and
ranks classes by the weighted chance of buying them in the evaluation window (importance sampling from the prior).
Without a household member the likelihood factorises exactly into the department mix's and each department's
usual classes', so each factor is weighted on its own and ``--draws`` joint samples are drawn factor by factor;
with a member, a factorised proposal is weighted back to the exact likelihood.

The likelihood is the generator's order model computed exactly for given tastes: an order's slot (the customer,
or their household member with the member's share), its mission department from that slot's mix under the day's
scenario regime, each line in the mission department with ``basket_focus`` or else from an independent slot and
department, and its class from the slot's usual-class weights, exploration (uniform in the department) and the
regime's class focus. Left out: replenishment's timing of basics, missions' companion classes, data-quality
noise, life events in the window. The window's chance of buying a class uses the same order model with the
customer's own past lines per order and their expected number of window orders (past orders scaled by the
persona's calendar). The same formula applied to the customer's own drawn tastes ("analytic truth") is checked
against the redraw truth, and the posterior's weight on the own draw, when it is added to the alternatives, is
reported by quarter of history (the method recovers the truth where the lines say enough). Effective sample sizes
of the weights are reported per quarter; where they are small (heavy customers) the posterior figure may be below
the Bayes ceiling.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_recommendations import _table, load_history  # noqa: E402
from common import command_line, load_average, load_span, machine, record  # noqa: E402
from core.config import load_config  # noqa: E402
from core.generate_data import generator  # noqa: E402
from core.profile_export import recommendations as rec  # noqa: E402

# Alternatives use seeds [POSTERIOR_SEED, customer id, part]: never stage 01's [seed, 2, block] nor the redraws'.
POSTERIOR_SEED = 4_243
FLOOR = 1e-12  # a line's probability under an alternative never reaches exactly 0 (unmodelled noise)
# Per customer: effective sample sizes of the department-mix factor, of the class factor with the fewest (among the
# departments bought) and of whole alternatives (household customers), and the own draw's weight when added.
DIAGNOSTICS = ("ess_dept", "ess_class", "ess_joint", "own_dept", "own_class", "own_joint")


# ----------------------------------------------------------------------------------------------
# The generator's order model, for given tastes (pure NumPy: tested on its own)


def order_log_likelihood(g_own, pi_own, g_member, pi_member, sigma: float, focus: float,
                         line_group: np.ndarray, group_order: np.ndarray) -> np.ndarray:
    """Log-probability of a customer's observed orders (their lines' classes) under each alternative.

    ``g_*[a, l]``: probability of line ``l``'s class within its department for the own / member slot under
    alternative ``a`` (its regime that day); ``pi_*[a, l]``: that slot's chance of the line's department.
    ``sigma``: the member's share (0: no household member). ``focus``: the generator's ``basket_focus``.
    ``line_group``: each line's (order, department) group, numbered in order of orders; ``group_order``: each
    group's order, non-decreasing. An order is one draw of a slot and a mission department; each line is in the
    mission department from the order's slot with ``focus``, else from an independent slot and department.
    """
    h = np.maximum((1 - sigma) * pi_own * g_own + sigma * pi_member * g_member, FLOOR)
    base_line = np.log((1 - focus) * h)
    n_groups = len(group_order)
    lines_to_groups = sp.csr_matrix((np.ones(len(line_group)), (line_group, np.arange(len(line_group)))),
                                    shape=(n_groups, len(line_group)))
    starts = np.flatnonzero(np.r_[True, group_order[1:] != group_order[:-1]])
    first_line = np.zeros(n_groups, dtype=np.int64)
    first_line[line_group[::-1]] = np.arange(len(line_group))[::-1]
    base = np.add.reduceat((lines_to_groups @ base_line.T).T, starts, axis=1)
    terms = []
    for share, g, pi in ((1 - sigma, g_own, pi_own), (sigma, g_member, pi_member)):
        if share <= 0:
            continue
        x = (lines_to_groups @ np.log1p(focus * g / ((1 - focus) * h)).T).T  # (alternatives, groups)
        pi_group = pi[:, first_line]
        rest = np.clip(1.0 - np.add.reduceat(pi_group, starts, axis=1), 0.0, None)
        y = np.log(np.maximum(pi_group, 1e-300)) + x
        top = np.maximum(np.maximum.reduceat(y, starts, axis=1), np.log(np.maximum(rest, 1e-300)))
        inner = rest * np.exp(-top) + np.add.reduceat(np.exp(y - np.repeat(top, np.diff(np.r_[starts, n_groups]),
                                                                          axis=1)), starts, axis=1)
        terms.append(np.log(share) + base + top + np.log(inner))
    per_order = terms[0] if len(terms) == 1 else np.logaddexp(terms[0], terms[1])
    return per_order.sum(axis=1)


def window_buy_probability(g_own, pi_own, g_member, pi_member, sigma: float, focus: float,
                           lines_per_order: float, orders: np.ndarray) -> np.ndarray:
    """Chance of buying each class at least once in ``orders[r]`` orders of regime combination ``r``.

    Arrays are (regime combinations, alternatives, classes): the class's within-department probability and its
    department's probability per slot. An order has ``lines_per_order`` lines (the customer's own mean).
    """
    h = (1 - sigma) * pi_own * g_own + sigma * pi_member * g_member
    n = lines_per_order
    miss_other = (1 - (1 - focus) * h) ** n
    log_not = np.zeros(h.shape[1:])
    for r in range(h.shape[0]):
        p_not = ((1 - sigma) * ((1 - pi_own[r]) * miss_other[r]
                                + pi_own[r] * np.clip(1 - focus * g_own[r] - (1 - focus) * h[r], 0, 1) ** n))
        if sigma > 0:
            p_not += sigma * ((1 - pi_member[r]) * miss_other[r]
                              + pi_member[r] * np.clip(1 - focus * g_member[r] - (1 - focus) * h[r], 0, 1) ** n)
        log_not += orders[r] * np.log(np.maximum(p_not, 1e-300))
    return -np.expm1(log_not)


def normalised_weights(log_likelihood: np.ndarray) -> tuple[np.ndarray, float]:
    """Importance weights (sum 1) from log-likelihoods, and their effective sample size."""
    w = np.exp(log_likelihood - log_likelihood.max())
    w /= w.sum()
    return w, float(1.0 / np.square(w).sum())


# ----------------------------------------------------------------------------------------------
# The generator's tastes as class probabilities


class TasteModel:
    """Class and department probabilities of slots' tastes under the plan's scenario regimes."""

    def __init__(self, plan):
        cat = plan.catalog
        self.plan = plan
        self.dept_of_class = np.asarray(cat.class_department, dtype=np.int64)
        n_depts, n_classes = len(cat.departments), len(cat.class_names)
        self.dept_size = np.bincount(self.dept_of_class, minlength=n_depts).astype(float)
        self.nonfocus = np.ones((len(plan.regimes), n_depts))
        self.focus = np.zeros((len(plan.regimes), n_classes))
        for r, regime in enumerate(plan.regimes):
            by_dept: dict[int, list] = {}
            for d, share, rows in regime.class_focus:
                by_dept.setdefault(int(d), []).append((float(share), np.asarray(rows)))
            # A line's class is the last focus (in config order) whose share its draw is under.
            for d, items in by_dept.items():
                later = 0.0
                for share, rows in reversed(items):
                    p = max(0.0, share - later)
                    later = max(later, share)
                    np.add.at(self.focus[r], rows, p / len(rows))
                    self.nonfocus[r, d] -= p

    def usual_weights(self, tastes: dict) -> np.ndarray:
        """Slots x classes: each slot's usual-class weights within each department (sum 1 per department)."""
        usual, cum, count = tastes["usual"], tastes["usual_cum"], tastes["usual_count"]
        m, n_depts, width = usual.shape
        w = np.diff(np.minimum(cum, 1.0), axis=2, prepend=0.0)
        w[np.arange(width)[None, None, :] >= count[:, :, None]] = 0.0
        w /= np.maximum(w.sum(axis=2, keepdims=True), 1e-300)
        n_classes = len(self.dept_of_class)
        index = (np.arange(m)[:, None, None] * n_classes + usual).ravel()
        return np.bincount(index, weights=w.ravel(), minlength=m * n_classes).reshape(m, n_classes)

    def class_in_department(self, weights: np.ndarray, persona: int, regime: np.ndarray,
                            classes: np.ndarray) -> np.ndarray:
        """(alternatives, len(classes)): each class's chance within its department under ``regime`` (per column)."""
        e = self.plan.exploration[persona]
        d = self.dept_of_class[classes]
        return (self.nonfocus[regime, d] * ((1 - e) * weights[:, classes] + e / self.dept_size[d])
                + self.focus[regime, classes])

    def department_share(self, mixes: np.ndarray, regime: np.ndarray, departments: np.ndarray) -> np.ndarray:
        """(alternatives, len(departments)): each slot's chance of the department under ``regime`` (per column)."""
        boost = self.plan.regime_boost
        used, inverse = np.unique(regime, return_inverse=True)
        weighted = mixes[:, None, :] * boost[used][None, :, :]  # (alternatives, regimes, departments)
        total = weighted.sum(axis=2, keepdims=True)
        share = np.where(total > 0, weighted / np.where(total > 0, total, 1.0), mixes[:, None, :])
        return share[:, inverse, departments]


# ----------------------------------------------------------------------------------------------
# One customer


def _subset(lines: dict, mask: np.ndarray) -> dict:
    """The lines under ``mask`` (whole orders), their groups numbered again."""
    used, group = np.unique(lines["group"][mask], return_inverse=True)
    return {"class": lines["class"][mask], "dept": lines["dept"][mask], "day": lines["day"][mask],
            "group": group, "group_order": lines["group_order"][used]}


def _predict(model: TasteModel, w_own, d_own, w_member, d_member, persona: int, member: int, sigma: float,
             focus: float, window: dict) -> np.ndarray:
    """(alternatives, classes): each alternative's chance of buying each class in the window."""
    classes = np.arange(len(model.dept_of_class))
    g_o, p_o, g_m, p_m = [], [], [], []
    for r_own, r_member in window["regimes"]:
        regime_o, regime_m = np.full(len(classes), r_own), np.full(len(classes), r_member)
        g_o.append(model.class_in_department(w_own, persona, regime_o, classes))
        p_o.append(model.department_share(d_own, regime_o, model.dept_of_class))
        g_m.append(model.class_in_department(w_member, member, regime_m, classes))
        p_m.append(model.department_share(d_member, regime_m, model.dept_of_class))
    return window_buy_probability(np.array(g_o), np.array(p_o), np.array(g_m), np.array(p_m), sigma, focus,
                                  window["lines_per_order"], window["orders"])


def factor_weights(model: TasteModel, w: np.ndarray, d: np.ndarray, persona: int, lines: dict,
                   focus: float) -> tuple[np.ndarray, np.ndarray]:
    """Log-likelihood factors of one slot's lines (no household member): the department mix's, (alternatives,),
    and each department's usual-class weights', (alternatives, departments).

    Without a member the order model factorises exactly: an order's probability is its lines' class chances
    within their departments times a term of the department mix alone, and the prior draws the department mix
    and each department's usual classes independently, so each factor has its own posterior.
    """
    n_depts = len(model.dept_size)
    if not len(lines["class"]):
        return np.zeros(len(w)), np.zeros((len(w), n_depts))
    regime = model.plan.day_regime[persona, lines["day"]]
    pi = model.department_share(d, regime, lines["dept"])
    ones = np.ones_like(pi)
    dept_ll = order_log_likelihood(ones, pi, ones, pi, 0.0, focus, lines["group"], lines["group_order"])
    g = model.class_in_department(w, persona, regime, lines["class"])
    to_dept = sp.csr_matrix((np.ones(len(lines["dept"])), (np.arange(len(lines["dept"])), lines["dept"])),
                            shape=(len(lines["dept"]), n_depts))
    return dept_ll, np.asarray(np.log(np.maximum(g, FLOOR)) @ to_dept)


def _sample_factors(rng: np.random.Generator, dept_ll: np.ndarray, class_ll: np.ndarray, draws: int,
                    dept_of_class: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Joint posterior samples from independent factors: each factor's candidate drawn by its own weights.
    Returns the department-mix candidate of each sample, (draws,), and each class's usual-weight candidate,
    (draws, classes)."""
    w, _ = normalised_weights(dept_ll)
    mix = rng.choice(len(w), size=draws, p=w)
    per_dept = np.empty((draws, class_ll.shape[1]), dtype=np.int64)
    for d in range(class_ll.shape[1]):
        wd, _ = normalised_weights(class_ll[:, d])
        per_dept[:, d] = rng.choice(len(wd), size=draws, p=wd)
    return mix, per_dept[:, dept_of_class]


def customer_scores(model: TasteModel, slots: dict, truth: dict, lines: dict, window: dict,
                    focus: float, draws: int, rng: np.random.Generator) -> dict:
    """Window buy chances per class for one customer: the posterior over alternatives, the prior, the own draw.

    ``slots``: the alternatives' usual weights and department mixes for the own slot, the slot after a life event
    and the member slot (each (alternatives, .)); ``truth``: the same three for the customer's own draw (one
    row each); ``lines``: the customer's past lines (class, department, day, group, group_order); ``window``:
    regime combinations, orders per combination and lines per order. Customers without a household member get
    the factorised posterior (``draws`` joint samples); the others importance weights over whole alternatives.
    """
    sigma = float(truth["sigma"])
    w_name, d_name, persona = (("w_after", "d_after", truth["to"]) if window["after_event"]
                               else ("w_own", "d_own", truth["persona"]))
    prior_buy = _predict(model, slots[w_name], slots[d_name], slots["w_member"], slots["d_member"], persona,
                         truth["member"], sigma, focus, window)
    own = truth["slots"]
    own_buy = _predict(model, own[w_name], own[d_name], own["w_member"], own["d_member"], persona, truth["member"],
                       sigma, focus, window)[0]
    out = {"prior": prior_buy.mean(axis=0), "own draw": own_buy}
    n = len(slots["w_own"])
    if sigma == 0:
        after = lines["day"] >= truth["event_day"]
        part = _subset(lines, after if window["after_event"] else ~after)
        w = np.vstack([slots[w_name], own[w_name]])
        d = np.vstack([slots[d_name], own[d_name]])
        dept_ll, class_ll = factor_weights(model, w, d, persona, part, focus)
        bought = np.unique(part["dept"])
        ess_class = [normalised_weights(class_ll[:n, b])[1] for b in bought]
        out.update(ess_dept=normalised_weights(dept_ll[:n])[1], ess_class=min(ess_class, default=float(n)),
                   own_dept=normalised_weights(dept_ll)[0][-1],
                   own_class=float(np.median([normalised_weights(class_ll[:, b])[0][-1] for b in bought]))
                   if len(bought) else np.nan)
        columns = np.arange(len(model.dept_of_class))
        for name, count in (("posterior", n), ("posterior with own draw", n + 1)):
            mix, per_class = _sample_factors(rng, dept_ll[:count], class_ll[:count], draws, model.dept_of_class)
            # Member arrays are unused without a member (sigma 0): the own ones stand in.
            w_s, d_s = w[per_class, columns[None, :]], d[mix]
            out[name] = _predict(model, w_s, d_s, w_s, d_s, persona, truth["member"], 0.0, focus, window).mean(0)
        return out
    for name, extra in (("posterior", False), ("posterior with own draw", True)):
        source = ({k: np.vstack([slots[k], own[k]]) for k in slots} if extra else slots)
        samples, weights, ess, own_share = household_posterior(model, source, truth, lines, focus, draws, rng)
        buy = _predict(model, samples[w_name], samples[d_name], samples["w_member"], samples["d_member"], persona,
                       truth["member"], sigma, focus, window)
        out[name] = weights @ buy
        if extra:
            out["own_joint"] = own_share
        else:
            out["ess_joint"] = ess
    return out


# The proposal's department factors count an order's lines as this many independent draws each: lines of one
# order share its mission department (basket_focus), so a plain multinomial would be overconfident.
PROPOSAL_TEMPER = 0.5


def household_posterior(model: TasteModel, source: dict, truth: dict, lines: dict, focus: float, draws: int,
                        rng: np.random.Generator) -> tuple[dict, np.ndarray, float, float]:
    """Posterior samples of a household customer's tastes (own, after-event and member slots): importance
    sampling with a factorised proposal, weighted back to the exact order likelihood.

    With a member the likelihood does not factorise (each line may be either slot's). The proposal does: each
    line is split between the slots by its chance under the persona's mean tastes, and each slot's department
    mix and each department's usual classes get their own weights from their share of the lines (department
    factors tempered by ``PROPOSAL_TEMPER``); a joint sample draws every factor by its weights, and its weight is
    the exact likelihood over the proposal's. Returns the samples (as ``source``'s keys), their normalised
    weights, the effective sample size, and the weight of samples whose own department mix is the last candidate
    (the customer's own draw, when it was added last).
    """
    plan = model.plan
    n_cand = len(source["w_own"])
    after = lines["day"] >= truth["event_day"]
    persona_line = np.where(after, truth["to"], truth["persona"])
    regime_own = plan.day_regime[persona_line, lines["day"]]
    regime_member = plan.day_regime[truth["member"], lines["day"]]
    classes, departments = lines["class"], lines["dept"]
    g = {"own": model.class_in_department(source["w_own"], truth["persona"], regime_own, classes),
         "after": model.class_in_department(source["w_after"], truth["to"], regime_own, classes),
         "member": model.class_in_department(source["w_member"], truth["member"], regime_member, classes)}
    pi = {"own": model.department_share(source["d_own"], regime_own, departments),
          "after": model.department_share(source["d_after"], regime_own, departments),
          "member": model.department_share(source["d_member"], regime_member, departments)}
    sigma = float(truth["sigma"])
    own_mean = np.where(after, (pi["after"] * g["after"]).mean(0), (pi["own"] * g["own"]).mean(0))
    member_mean = (pi["member"] * g["member"]).mean(0)
    member_part = sigma * member_mean / np.maximum((1 - sigma) * own_mean + sigma * member_mean, FLOOR)
    share = {"own": (1 - member_part) * ~after, "after": (1 - member_part) * after, "member": member_part}
    n_depts = len(model.dept_size)
    to_dept = sp.csr_matrix((np.ones(len(departments)), (np.arange(len(departments)), departments)),
                            shape=(len(departments), n_depts))
    samples, proposal_ll = {}, np.zeros(draws)
    columns = np.arange(len(model.dept_of_class))
    own_mix = None
    for slot in ("own", "after", "member"):
        dept_ll = PROPOSAL_TEMPER * (np.log(np.maximum(pi[slot], FLOOR)) @ share[slot])
        class_ll = np.asarray((np.log(np.maximum(g[slot], FLOOR)) * share[slot]) @ to_dept)
        mix, per_class = _sample_factors(rng, dept_ll, class_ll, draws, model.dept_of_class)
        samples[f"d_{slot}"] = source[f"d_{slot}"][mix]
        samples[f"w_{slot}"] = source[f"w_{slot}"][per_class, columns[None, :]]
        proposal_ll += dept_ll[mix] - np.logaddexp.reduce(dept_ll)
        per_dept = per_class[:, np.searchsorted(model.dept_of_class, np.arange(n_depts))]
        for d in range(n_depts):
            proposal_ll += class_ll[per_dept[:, d], d] - np.logaddexp.reduce(class_ll[:, d])
        if slot == "own":
            own_mix = mix
    log_w = _joint_log_likelihood(model, samples, truth, lines, focus) - proposal_ll
    weights, ess = normalised_weights(log_w)
    return samples, weights, ess, float(weights[own_mix == n_cand - 1].sum())


def _joint_log_likelihood(model: TasteModel, source: dict, truth: dict, lines: dict, focus: float) -> np.ndarray:
    """Log-likelihood of all the customer's lines under whole alternatives (own, after-event and member slots)."""
    plan = model.plan
    after = lines["day"] >= truth["event_day"]
    regime_own = plan.day_regime[np.where(after, truth["to"], truth["persona"]), lines["day"]]
    regime_member = plan.day_regime[truth["member"], lines["day"]]
    classes, departments = lines["class"], lines["dept"]
    g_own = np.where(after[None, :],
                     model.class_in_department(source["w_after"], truth["to"], regime_own, classes),
                     model.class_in_department(source["w_own"], truth["persona"], regime_own, classes))
    pi_own = np.where(after[None, :], model.department_share(source["d_after"], regime_own, departments),
                      model.department_share(source["d_own"], regime_own, departments))
    g_member = model.class_in_department(source["w_member"], truth["member"], regime_member, classes)
    pi_member = model.department_share(source["d_member"], regime_member, departments)
    return order_log_likelihood(g_own, pi_own, g_member, pi_member, float(truth["sigma"]), focus, lines["group"],
                                lines["group_order"])


def _slot_arrays(model: TasteModel, tastes: dict, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sub = {k: tastes[k][rows] for k in ("usual", "usual_cum", "usual_count")}
    return model.usual_weights(sub), tastes["department"][rows]


def draw_alternatives(model: TasteModel, persona: int, to: int, member: int, n: int, customer_id: int) -> dict:
    """``n`` alternative tastes for the customer's own slot, their slot after a life event and their member slot,
    drawn with the generator's ``draw_tastes`` from seeds of their own."""
    rng = np.random.default_rng([POSTERIOR_SEED, int(customer_id)])
    tastes = generator.draw_tastes(np.repeat(np.array([persona, to, member]), n), model.plan, rng)
    out = {}
    for name, part in (("own", 0), ("after", 1), ("member", 2)):
        w, d = _slot_arrays(model, tastes, np.arange(part * n, (part + 1) * n))
        out[f"w_{name}"], out[f"d_{name}"] = w, d
    return out


# ----------------------------------------------------------------------------------------------
# The run


def _past_lines(artifacts: Path, ids: np.ndarray, items: pd.DataFrame, item_class: np.ndarray,
                start: pd.Timestamp, cut_day: int) -> pd.DataFrame:
    """The scored customers' merchandise purchase lines up to the cut: customer, order, day, catalog class."""
    source = pq.ParquetFile(artifacts / "01_generate_data" / "transactions.parquet")
    wanted = set(ids.tolist())
    parts = []
    for batch in source.iter_batches(batch_size=2_000_000, columns=["customer_id", "order_id", "order_date",
                                                                     "department", "class", "is_return"]):
        frame = batch.to_pandas()
        frame = frame[frame["customer_id"].isin(wanted) & ~frame["is_return"].to_numpy(bool)]
        day = (pd.to_datetime(frame["order_date"]).dt.normalize() - start).dt.days.to_numpy()
        item = rec.item_codes(frame, items)
        keep = (item >= 0) & (day <= cut_day)
        parts.append(pd.DataFrame({"customer_id": frame["customer_id"].to_numpy()[keep],
                                   "order_id": frame["order_id"].to_numpy()[keep], "day": day[keep],
                                   "class": item_class[item[keep]]}))
    return pd.concat(parts, ignore_index=True).sort_values(["customer_id", "day", "order_id"], kind="stable")


def _customer_lines(frame: pd.DataFrame, dept_of_class: np.ndarray) -> dict:
    codes, _ = pd.factorize(frame["order_id"].to_numpy())
    classes = frame["class"].to_numpy(np.int64)
    dept = dept_of_class[classes]
    order = np.argsort(codes * 1000 + dept, kind="stable")
    codes, classes, dept = codes[order], classes[order], dept[order]
    day = frame["day"].to_numpy(np.int64)[order]
    key = codes * 1000 + dept
    group = np.cumsum(np.r_[True, key[1:] != key[:-1]]) - 1
    group_order = codes[np.r_[True, key[1:] != key[:-1]]]
    return {"class": classes, "dept": dept, "day": day, "group": group, "group_order": group_order,
            "orders": int(codes.max()) + 1}


def _window(plan, lines: dict, persona: int, to: int, member: int, event_day: int, cut_day: int) -> dict:
    """Regime combinations of the window's days, expected orders in each (the customer's past orders scaled by
    their persona's calendar), and the customer's lines per order."""
    after_event = event_day <= cut_day + 1
    own = to if after_event else persona
    days = np.arange(cut_day + 1, plan.n_days)
    intensity = np.diff(plan.intensity_cum[own])[days]
    first = int(lines["day"].min())
    past_persona = persona if event_day > cut_day else own
    past_mass = plan.intensity_cum[past_persona, cut_day + 1] - plan.intensity_cum[past_persona, first]
    expected = lines["orders"] / max(past_mass, 1e-9) * intensity.sum()
    combos = pd.DataFrame({"o": plan.day_regime[own, days], "m": plan.day_regime[member, days], "w": intensity})
    combos = combos.groupby(["o", "m"], as_index=False)["w"].sum()
    return {"after_event": after_event, "regimes": list(zip(combos["o"], combos["m"])),
            "orders": expected * combos["w"].to_numpy() / combos["w"].sum(),
            "lines_per_order": len(lines["class"]) / lines["orders"]}


def posterior_scores(config: Path, artifacts: Path, history: rec.PurchaseHistory, rows: np.ndarray,
                     alternatives: int, draws: int) -> dict:
    """Per scored row (``rows``), items x scores of each ranking, with effective sample sizes and own weights."""
    cfg = load_config(config)
    if cfg.data.source != "synthetic":
        raise SystemExit(f"{config}: data.source is {cfg.data.source!r}; the posterior needs the generator "
                         "(data.source: synthetic)")
    plan = generator.build_plan(cfg.personas, cfg.scenarios, cfg.hierarchy, cfg.data, cfg.generate_data, cfg.seed)
    model = TasteModel(plan)
    catalog = plan.catalog
    key = pd.MultiIndex.from_frame(history.items[["department", "class"]])
    class_item = key.get_indexer(pd.MultiIndex.from_arrays(
        [[catalog.departments[d] for d in catalog.class_department], catalog.class_names])).astype(np.int64)
    item_class = np.full(len(history.items), -1, dtype=np.int64)
    item_class[class_item[class_item >= 0]] = np.flatnonzero(class_item >= 0)
    start = pd.Timestamp(cfg.data.history_start)
    cut_day = (history.cuts[1] - start).days
    ids = history.customer_index.to_numpy()[rows]
    past = _past_lines(artifacts, ids, history.items, item_class, start, cut_day)
    by_customer = dict(tuple(past.groupby("customer_id", sort=False)))
    names = ["posterior", "prior", "own draw", "posterior with own draw"]
    out = {name: np.zeros((len(rows), len(history.items))) for name in names}
    for name in DIAGNOSTICS:
        out[name] = np.full(len(rows), np.nan)
    out["household"] = np.zeros(len(rows), dtype=bool)
    position = pd.Series(np.arange(len(rows)), index=ids)
    size, focus = generator.BLOCK_SIZE, cfg.generate_data.basket_focus
    started = time.perf_counter()
    done = 0
    for index in np.unique((ids - 1) // size):
        n = min(size, cfg.data.n_customers - index * size)
        block = generator.draw_block(index * size + 1, n, plan, np.random.default_rng([cfg.seed, 2, index]))
        c, o = block["customers"], block["orders"]
        slots = c["slots"]
        for cid in ids[(ids - 1) // size == index]:
            i = int(cid - index * size - 1)
            member_slot, after_slot = n + i, int(c["after_slot"][i])
            truth = {"persona": int(c["persona"][i]), "to": int(o["to"][i]), "member": int(slots["persona"][n + i]),
                     "sigma": float(c["member_share"][i]), "event_day": int(o["event_day"][i])}
            w_t, d_t = _slot_arrays(model, slots, np.array([i, after_slot, member_slot]))
            truth["slots"] = {"w_own": w_t[:1], "d_own": d_t[:1], "w_after": w_t[1:2], "d_after": d_t[1:2],
                              "w_member": w_t[2:], "d_member": d_t[2:]}
            lines = _customer_lines(by_customer[cid], model.dept_of_class)
            window = _window(plan, lines, truth["persona"], truth["to"], truth["member"], truth["event_day"],
                             cut_day)
            alts = draw_alternatives(model, truth["persona"], truth["to"], truth["member"], alternatives, cid)
            result = customer_scores(model, alts, truth, lines, window, focus, draws,
                                     np.random.default_rng([POSTERIOR_SEED, int(cid), 1]))
            p = position[cid]
            for name in names:
                out[name][p, class_item[class_item >= 0]] = result[name][class_item >= 0]
            for name in DIAGNOSTICS:
                out[name][p] = result.get(name, np.nan)
            out["household"][p] = truth["sigma"] > 0
            done += 1
            if done % 250 == 0:
                print(f"{done:,} of {len(rows):,} customers, {time.perf_counter() - started:.0f} s", flush=True)
    return out


def _stratified(rows: np.ndarray, quarter: np.ndarray, wanted: int, seed: int) -> np.ndarray:
    """Positions of an equal-size random sample of each quarter (all when ``wanted`` is 0 or more than there are)."""
    if wanted <= 0 or wanted >= len(rows):
        return np.arange(len(rows))
    rng = np.random.default_rng([POSTERIOR_SEED, seed])
    per = wanted // (quarter.max() + 1)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(quarter == q), min(per, int((quarter == q).sum())),
                                              replace=False) for q in range(quarter.max() + 1)]))


def _quarter_rows(posterior: dict, quarter: np.ndarray, n_quarters: int) -> list[list[str]]:
    """Table rows of the weights' diagnostics by quarter: median (10th percentile) over the customers."""
    labels = {"ess_dept": "effective sample size, department-mix factor (no member)",
              "ess_class": "effective sample size, weakest class factor (no member)",
              "ess_joint": "effective sample size, joint samples (household customers)",
              "own_dept": "own draw's weight when added: department-mix factor",
              "own_class": "own draw's weight when added: class factors (median over departments bought)",
              "own_joint": "own draw's weight when added: household customers' samples with its department mix"}
    rows = []
    for name, label in labels.items():
        cells = []
        for q in range(n_quarters):
            values = posterior[name][(quarter == q) & ~np.isnan(posterior[name])]
            digits = 0 if name.startswith("ess") else 3
            cells.append(f"{np.median(values):.{digits}f} ({np.percentile(values, 10):.{digits}f})"
                         if len(values) else "-")
        rows.append([label, "", "", *cells])
    return rows


def _row_scaled(scores: np.ndarray) -> np.ndarray:
    return scores / np.maximum(scores.max(axis=1, keepdims=True), 1e-12)


def posterior_section(config: Path, artifacts: Path, k: int, window: int, alternatives: int, draws: int,
                      customers: int, replicates: int, seed: int) -> list[str]:
    from bench_recommendation_ceiling import truth_scores

    started = time.perf_counter()
    history, segments, end = load_history(artifacts, k, window)
    fit, relevant = history.interactions(1), history.bought(2)
    scored = rec.evaluable_rows(fit, relevant)["evaluated"]
    lines_all = np.asarray(fit.counts[scored].sum(axis=1)).ravel()
    quarter_all = pd.qcut(lines_all, 4, labels=False, duplicates="drop")
    n_q = int(quarter_all.max()) + 1
    bounds = [f"{lines_all[quarter_all == q].min():.0f}-{lines_all[quarter_all == q].max():.0f}" for q in range(n_q)]
    pick = _stratified(scored, quarter_all, customers, seed)
    rows, quarter = scored[pick], quarter_all[pick]
    result = rec.evaluate_history(history, segments, k, seed)
    model = rec.NextBestClasses(weights=result["weights"], top_k=k).fit(fit, segments)
    tie = rec.TIE_BREAK * model.global_popularity_
    posterior = posterior_scores(config, artifacts, history, rows, alternatives, draws)
    post_name = f"posterior of the past lines ({alternatives} alternatives)"
    rankings = {post_name: posterior["posterior"] + tie,
                "persona prior alone (no lines)": posterior["prior"] + tie,
                "posterior, own draw added to the alternatives": posterior["posterior with own draw"] + tie,
                "own draw, same formula (analytic truth)": posterior["own draw"] + tie}
    if replicates > 0:
        truth = truth_scores(config, artifacts, history, replicates)
        rankings[f"generator's truth ({replicates} redraws)"] = truth[rows] + tie
    stage_name = f"stage 05 model ({', '.join(f'{c} {w:.1f}' for c, w in result['weights'].items() if w)})"
    rankings[stage_name] = model.blend(model.components(fit, segments, rows))
    # One fixed blend, not tuned on the window: what the order model leaves out (replenishment's cycles, missions'
    # companions) the model's repeat and co-occurrence components may carry.
    rankings["posterior and stage 05 model, half each (rows scaled to a maximum of 1)"] = (
        _row_scaled(posterior["posterior"]) + _row_scaled(rankings[stage_name]) + tie)
    base_name = "own top classes by spend (best baseline)"
    rankings[base_name] = rec.baseline_scores("own_top_classes", model, fit, segments, rows)
    recall = {name: rec.ranking_metrics(rec.top_k(scores, k)[0], relevant[rows], fit.counts[rows])["recall"]
              for name, scores in rankings.items()}
    # Quarters may be sampled equally: the overall figure weighs them as the full set does.
    share = np.bincount(quarter_all) / len(quarter_all)

    def overall(values, mask=None):
        mask = np.ones(len(values), bool) if mask is None else mask
        return float(sum(share[q] * values[(quarter == q) & mask].mean() for q in range(n_q)))

    def standard_error(values):
        return float(np.sqrt(sum(share[q] ** 2 * values[quarter == q].var(ddof=1) / (quarter == q).sum()
                                 for q in range(n_q))))

    base = overall(recall[base_name])
    post, stage = recall[post_name], recall[stage_name]
    table = [[name, f"{overall(r):.4f}", f"{overall(r) / base:.2f}",
              *[f"{r[quarter == q].mean():.3f}" for q in range(n_q)]] for name, r in recall.items()]
    household = posterior["household"]
    split = "; ".join(
        f"{label} ({int(mask.sum()):,}): posterior {overall(post, mask):.4f}, model {overall(stage, mask):.4f}, "
        f"baseline {overall(recall[base_name], mask):.4f} "
        f"({overall(post, mask) / overall(recall[base_name], mask):.2f} x)"
        for label, mask in (("customers without a household member, factorised posterior", ~household),
                            ("with one, factorised proposal weighted to the exact likelihood", household)))
    sample = ("all" if len(rows) == len(scored) else
              "an equal random sample of each quarter of history, weighted back to the quarters")
    return [f"### The ceiling of any model of the past lines: the generator's posterior, k = {k}", "",
            f"Input: {artifacts} (config {config}); {len(rows):,} of the {len(scored):,} scored customers "
            f"({sample}), "
            f"classes bought {(history.cuts[1] + pd.Timedelta(days=1)).date()} to {history.cuts[2].date()}; "
            f"{alternatives} alternative taste draws per customer, {draws} joint posterior samples (no member). "
            f"Posterior minus stage 05 model: {overall(post - stage):+.4f} (paired standard error "
            f"{standard_error(post - stage):.4f}); posterior's standard error {standard_error(post):.4f}; target "
            f"recall 1.2 x the baseline = {1.2 * base:.4f}. By household: {split}. "
            f"{time.perf_counter() - started:.0f} s.", "",
            *_table(["ranking", f"recall@{k}", "x baseline", *[f"recall, history lines {b}" for b in bounds]],
                    table + _quarter_rows(posterior, quarter, n_q)), ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="the config the run in --artifacts was made with")
    parser.add_argument("--artifacts", type=Path, required=True,
                        help="artifacts folder of a run finished up to stage 04")
    parser.add_argument("--alternatives", type=int, default=500, help="taste draws per customer")
    parser.add_argument("--draws", type=int, default=2000,
                        help="joint samples from the factorised posterior per customer (no household member)")
    parser.add_argument("--customers", type=int, default=0,
                        help="scored customers, an equal sample of each quarter of history (0: all)")
    parser.add_argument("--replicates", type=int, default=30, help="redraws for the generator's truth (0: skip)")
    parser.add_argument("--k", type=int, default=5, help="classes recommended per customer")
    parser.add_argument("--window-days", type=int, default=182, help="evaluation window, days")
    parser.add_argument("--seed", type=int, default=42, help="seed of the validation sample (the run's config seed)")
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    if args.alternatives < 2:
        parser.error(f"--alternatives must be at least 2, got {args.alternatives}")
    load_before = load_average()
    report = posterior_section(args.config, args.artifacts, args.k, args.window_days, args.alternatives,
                               args.draws, args.customers, args.replicates, args.seed)
    print("\n".join(report))
    if args.record:
        command, loads = command_line("bench_recommendation_posterior.py", argv), load_span(load_before)
        record("\n".join([f"\n## Next-best classes: the ceiling of any model of the past lines (issue 15, helper "
                          f"c15), {pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M} UTC\n",
                          f"- Machine: {machine()}", f"- Command: `{command.strip()}`",
                          f"- Load average (1, 5, 15 min) {loads}", ""] + report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
