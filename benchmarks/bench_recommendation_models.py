"""Next-best classes, fifth round (issue 15): model classes not tried before, against the profile.

    python benchmarks/bench_recommendation_models.py [--artifacts DIR] [--seed 42] [--validation-only] [--record]

Reads a finished run (stages 01-04) like ``bench_recommendations.py`` and builds the same purchase history. Every
candidate is a score per (customer, class); each is measured with the honest split of the earlier rounds:

- its settings (a regularisation, a neighbourhood size, a blend weight) are chosen on the **validation split**
  (fit to the analysis date minus two windows, scored on the window after it), by recall@k there;
- then it is scored once on the **evaluation window** (fit to the analysis date minus one window, scored on the
  window), the customers who bought before and in it, as stage 05 does.

``--validation-only`` prints the validation split alone (for exploring without reading the window); ``--only``
measures some families; ``--save-settings`` writes the validation's choice and ``--settings-from`` scores the window
with another run's (``seed: 7`` with seed 42's, unchanged).

The reference is the profile, stage 05's main component: the customer's class lines smoothed towards their
segment's line mix with a prior worth 16 lines. Candidates:

1. **EASE** (Steck 2019): the closed-form item-item linear autoencoder ``B = I - P / diag(P)``,
   ``P = (X'X + lambda I)^-1`` on the customer x class matrix of every customer with history (binary or square
   root of the lines); also without the zero-diagonal constraint (``B = I - lambda P``, ridge regression of
   each class on all, itself included, so a repeat can score). Alone and blended with the profile.
2. **Empirical-Bayes Dirichlet-multinomial**: the profile's prior strength fitted per segment by maximum marginal
   likelihood of the customers' line (or purchase-day) counts, with the segment's line mix as the prior mean;
   and the Dirichlet's whole parameter vector fitted per segment (Minka's fixed point), whose mean weighs every
   customer alike rather than by their lines.
3. **Beta-binomial per class**: each class's share of a customer's lines drawn from its own Beta per segment
   (mean: the segment's line share; concentration by maximum marginal likelihood per class), so a class some
   customers buy much of and most none (a customer's own picks) learns more from one purchase than a class every
   customer of the segment buys a little of.
4. **User-kNN prior**: each customer's prior from the class mix of their ``k`` most similar customers (cosine of
   the square roots of the class shares) instead of the whole segment's mix.
5. **Department then class, departments counted in orders**: ``P(department) x P(class | department)``, each an
   empirical-Bayes Dirichlet-multinomial posterior per segment, the department's evidence the orders holding it
   (an order's lines come mostly from one department, so ten lines of two orders are two draws, not ten) or its
   lines; every strength by maximum marginal likelihood.

The comparison with the profile is paired per customer (mean difference of recall@k and its standard error);
light customers (at most 25 lines before the cut, the quarter where the generator's truth gains most) are shown
apart. ``--record`` appends the tables to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import minimize_scalar
from scipy.special import digamma, gammaln

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_recommendations import _table, load_history, order_items  # noqa: E402
from common import command_line, load_average, load_span, machine, record  # noqa: E402
from core.framework import paths  # noqa: E402
from core.profile_export import recommendations as rec  # noqa: E402

PRIOR_LINES = rec.PROFILE_PRIOR_LINES
LIGHT_LINES = 25
EASE_LAMBDAS = (10.0, 50.0, 200.0, 1000.0, 5000.0)
BLEND_WEIGHTS = (0.1, 0.2, 0.3, 0.5, 0.7)
KAPPAS = np.exp(np.linspace(np.log(0.05), np.log(2000.0), 40))
KNN_SIZES = (50, 100, 200)
KNN_SHARES = (0.5, 1.0)
MINKA_ROUNDS = 300


@dataclass
class Split:
    """One fit-and-score split: the history at the cut, the customers scored and what they bought next."""

    name: str
    fit: rec.Interactions
    counts: sp.csr_matrix      # lines before the cut, every customer
    days: sp.csr_matrix        # purchase days before the cut, every customer
    segments: np.ndarray       # each customer's row of the segment tables (last row: everyone, for noise)
    mixes: np.ndarray          # segment line mixes (segments + 1, items), as stage 05's profile prior
    rows: np.ndarray           # customers scored
    relevant: sp.csr_matrix    # classes they bought in the period after the cut
    seen: sp.csr_matrix        # classes they bought before it
    order_departments: sp.csr_matrix  # orders before the cut holding each department, every customer
    department_of: np.ndarray  # each class's department index


def make_split(history: rec.PurchaseHistory, segments: np.ndarray, cut: int, name: str,
               orders: pd.DataFrame) -> Split:
    """The split fitted at ``cuts[cut]`` and scored on the period after it (nothing later is read)."""
    fit, bought = history.interactions(cut), history.bought(cut + 1)
    department_of = pd.factorize(history.items["department"])[0]
    before = orders[orders["day"] <= history.cuts[cut]]
    row = history.customer_index.get_indexer(before["customer_id"])
    pairs = pd.DataFrame({"row": row, "order": before["order_id"].to_numpy(),
                          "dept": department_of[before["item"].to_numpy()]})
    pairs = pairs[pairs["row"] >= 0].drop_duplicates(["order", "dept"])
    order_departments = sp.csr_matrix((np.ones(len(pairs)), (pairs["row"], pairs["dept"])),
                                      shape=(history.shape[0], department_of.max() + 1))
    order_departments.sum_duplicates()
    rows = rec.evaluable_rows(fit, bought)["evaluated"]
    model = rec.NextBestClasses(top_k=5).fit(fit, segments)
    seg_rows = model._segment_rows(segments)
    seg_rows = np.where(seg_rows < 0, len(model.segments_), seg_rows)
    return Split(name, fit, fit.counts.tocsr(), fit.days.tocsr(), seg_rows, model.segment_mix_, rows,
                 bought[rows], fit.counts[rows], order_departments, department_of)


# ---------------------------------------------------------------------------------------------
# Scoring


def recall_of(split: Split, scores: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-customer metrics of the top k of ``scores`` (rows of ``split.rows``); ties broken by popularity."""
    popularity = np.asarray((split.counts > 0).sum(axis=0), dtype=np.float64).ravel()
    scores = np.asarray(scores, dtype=np.float64)
    shifted = scores - scores.min(axis=1, keepdims=True) + 1.0 + 1e-9 * popularity / max(popularity.max(), 1.0)
    items = rec.top_k(shifted, k)[0]
    return rec.ranking_metrics(items, split.relevant, split.seen) | {"items": items}


def smoothed(counts: sp.csr_matrix, rows: np.ndarray, prior: np.ndarray, strength) -> np.ndarray:
    """``(n + strength x prior) / (N + strength)`` per customer of ``rows`` (``prior`` per row, summing to 1;
    ``strength`` a number, one per row, or one per row and class)."""
    n = counts[rows].toarray()
    strength = np.asarray(strength, dtype=np.float64)
    if strength.ndim == 1:
        strength = strength[:, None]
    return (n + strength * prior) / (n.sum(axis=1, keepdims=True) + strength)


def profile(split: Split) -> np.ndarray:
    """Stage 05's profile component (before its row scaling, which does not change the order)."""
    return smoothed(split.counts, split.rows, split.mixes[split.segments[split.rows]], PRIOR_LINES)


def scaled(scores: np.ndarray) -> np.ndarray:
    """Each row divided by its maximum (negative scores cut to 0), as stage 05 scales its components."""
    scores = np.maximum(scores, 0.0)
    return scores / np.maximum(scores.max(axis=1, keepdims=True), 1e-12)


# ---------------------------------------------------------------------------------------------
# 1. EASE


def ease_weights(matrix: sp.csr_matrix, lam: float, zero_diagonal: bool = True) -> np.ndarray:
    """EASE's item-item weights on ``matrix`` (customers x items): ``I - P / diag(P)`` (zero diagonal) or
    ``I - lambda P`` (ridge regression of every item on all, itself included)."""
    gram = (matrix.T @ matrix).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += lam
    inverse = np.linalg.inv(gram)
    if zero_diagonal:
        weights = -inverse / np.diag(inverse)[None, :]
        np.fill_diagonal(weights, 0.0)
        return weights
    return np.eye(len(gram)) - lam * inverse


def ease_input(counts: sp.csr_matrix, kind: str) -> sp.csr_matrix:
    matrix = counts.astype(np.float64).tocsr(copy=True)
    matrix.data = np.ones_like(matrix.data) if kind == "binary" else np.sqrt(matrix.data)
    return matrix


def ease_scores(split: Split, kind: str, lam: float, zero_diagonal: bool) -> np.ndarray:
    matrix = ease_input(split.counts, kind)
    return np.asarray(matrix[split.rows] @ ease_weights(matrix, lam, zero_diagonal))


# ---------------------------------------------------------------------------------------------
# 2. Empirical-Bayes Dirichlet-multinomial


def _members(split: Split, segment: int) -> np.ndarray:
    """Customers of a segment (table row) with at least one line before the cut."""
    has = np.diff(split.counts.indptr) > 0
    return np.flatnonzero((split.segments == segment) & has)


def dm_strength(counts: sp.csr_matrix, mean: np.ndarray) -> float:
    """Maximum marginal likelihood concentration ``a`` of a Dirichlet-multinomial with mean ``mean`` for the
    rows of ``counts`` (only the classes a customer bought enter the sum over classes)."""
    counts = counts.tocsr()
    totals = np.asarray(counts.sum(axis=1)).ravel()
    cols, values = counts.indices, counts.data
    m = np.maximum(mean[cols], 1e-12)

    def minus_loglik(log_a: float) -> float:
        a = np.exp(log_a)
        return -(np.sum(gammaln(a) - gammaln(totals + a)) + np.sum(gammaln(values + a * m) - gammaln(a * m)))

    found = minimize_scalar(minus_loglik, bounds=(np.log(0.05), np.log(1e5)), method="bounded")
    return float(np.exp(found.x))


def dm_minka(counts: sp.csr_matrix, start: np.ndarray, rounds: int = MINKA_ROUNDS) -> np.ndarray:
    """The Dirichlet parameter vector (mean and concentration) of maximum marginal likelihood for the rows of
    ``counts``, Minka's fixed point from ``start``."""
    counts = counts.tocsr()
    totals = np.asarray(counts.sum(axis=1)).ravel()
    coo = counts.tocoo()
    alpha = np.maximum(start, 1e-6)
    for _ in range(rounds):
        top = np.bincount(coo.col, digamma(coo.data + alpha[coo.col]) - digamma(alpha[coo.col]),
                          minlength=len(alpha))
        bottom = np.sum(digamma(totals + alpha.sum()) - digamma(alpha.sum()))
        alpha = np.maximum(alpha * top / bottom, 1e-6)
    return alpha


def eb_dirichlet(split: Split, basis: str, full: bool) -> tuple[np.ndarray, dict]:
    """Profile scores with each segment's prior fitted by maximum marginal likelihood on ``basis`` counts
    (``lines`` or ``days``); ``full``: the whole Dirichlet vector (Minka), else only its strength."""
    counts = split.counts if basis == "lines" else split.days
    n_tables = split.mixes.shape[0]
    alphas = np.zeros_like(split.mixes)
    fitted = {}
    for segment in range(n_tables):
        members = _members(split, segment) if segment < n_tables - 1 else np.flatnonzero(np.diff(counts.indptr) > 0)
        if len(members) < 30:
            alphas[segment] = PRIOR_LINES * split.mixes[segment]
            continue
        mean = np.asarray(counts[members].sum(axis=0)).ravel()
        mean = mean / max(mean.sum(), 1.0)
        a = dm_strength(counts[members], mean)
        alphas[segment] = dm_minka(counts[members], a * mean) if full else a * mean
        fitted[segment] = round(float(alphas[segment].sum()), 2)
    prior = alphas[split.segments[split.rows]]
    strength = prior.sum(axis=1)
    return smoothed(counts, split.rows, prior / strength[:, None], strength), fitted


# ---------------------------------------------------------------------------------------------
# 3. Beta-binomial per class


def beta_binomial_kappa(counts: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Per class (column of the dense ``counts``, customers x classes): the concentration ``kappa`` of a Beta
    with mean ``mean`` that maximises the beta-binomial marginal likelihood of the customers' lines of the
    class out of their lines (grid :data:`KAPPAS`)."""
    totals = counts.sum(axis=1, keepdims=True)
    m = np.clip(mean, 1e-9, 1 - 1e-9)[None, :]
    best, best_ll = np.full(counts.shape[1], KAPPAS[0]), np.full(counts.shape[1], -np.inf)
    for kappa in KAPPAS:
        a, b = kappa * m, kappa * (1 - m)
        ll = (gammaln(counts + a) + gammaln(totals - counts + b) - gammaln(totals + kappa)
              - gammaln(a) - gammaln(b) + gammaln(kappa)).sum(axis=0)
        better = ll > best_ll
        best[better], best_ll[better] = kappa, ll[better]
    return best


def beta_binomial(split: Split, basis: str) -> tuple[np.ndarray, dict]:
    """Posterior mean share ``(n + kappa_j m_j) / (N + kappa_j)`` with each segment's per-class ``kappa_j``."""
    counts = split.counts if basis == "lines" else split.days
    n_tables = split.mixes.shape[0]
    kappas = np.full_like(split.mixes, PRIOR_LINES)
    means = split.mixes.copy()
    for segment in range(n_tables - 1):
        members = _members(split, segment)
        if len(members) < 30:
            continue
        dense = counts[members].toarray()
        mean = dense.sum(axis=0) / max(dense.sum(), 1.0)
        means[segment] = mean
        kappas[segment] = beta_binomial_kappa(dense, mean)
    seg = split.segments[split.rows]
    prior, strength = means[seg], kappas[seg]
    n = counts[split.rows].toarray()
    scores = (n + strength * prior) / (n.sum(axis=1, keepdims=True) + strength)
    weights = split.mixes[:-1].ravel()
    typical = float(np.exp(np.average(np.log(kappas[:-1].ravel()), weights=weights)))
    return scores, {"line-weighted geometric mean kappa": round(typical, 2)}


# ---------------------------------------------------------------------------------------------
# 5. Department then class, departments counted in orders


def nested(split: Split, department_basis: str) -> tuple[np.ndarray, dict]:
    """``P(department) x P(class | department)``, each an empirical-Bayes Dirichlet-multinomial posterior mean
    per segment: departments counted in orders holding them (``orders``) or in lines (``lines``), the
    classes within a department in lines; every prior strength by maximum marginal likelihood."""
    counts, dept = split.counts, split.department_of
    n_depts = dept.max() + 1
    to_dept = sp.csr_matrix((np.ones(len(dept)), (np.arange(len(dept)), dept)), shape=(len(dept), n_depts))
    dept_counts = (split.order_departments if department_basis == "orders" else counts @ to_dept).tocsr()
    n_tables = split.mixes.shape[0]
    dept_alpha = np.zeros((n_tables, n_depts))
    class_alpha = np.zeros_like(split.mixes)
    strengths = {}
    for segment in range(n_tables):
        members = _members(split, segment) if segment < n_tables - 1 else np.flatnonzero(np.diff(counts.indptr) > 0)
        if len(members) < 30:
            members = np.flatnonzero(np.diff(counts.indptr) > 0)
        mean = np.asarray(dept_counts[members].sum(axis=0)).ravel()
        mean = mean / max(mean.sum(), 1.0)
        a = dm_strength(dept_counts[members], mean)
        dept_alpha[segment] = a * mean
        lines = counts[members]
        within = []
        for d in range(n_depts):
            columns = np.flatnonzero(dept == d)
            block = lines[:, columns].tocsr()
            block = block[np.diff(block.indptr) > 0]
            share = np.asarray(block.sum(axis=0)).ravel()
            share = share / max(share.sum(), 1.0)
            b = dm_strength(block, share) if block.shape[0] >= 30 and share.max() < 1 else PRIOR_LINES
            class_alpha[segment, columns] = b * share
            within.append(b)
        strengths[segment] = (round(a, 1), round(float(np.median(within)), 1))
    seg = split.segments[split.rows]
    d_alpha, c_alpha = dept_alpha[seg], class_alpha[seg]
    d_n = dept_counts[split.rows].toarray()
    p_dept = (d_n + d_alpha) / (d_n.sum(axis=1, keepdims=True) + d_alpha.sum(axis=1, keepdims=True))
    n = counts[split.rows].toarray()
    n_in_dept = n @ to_dept.toarray()
    alpha_in_dept = c_alpha @ to_dept.toarray()
    p_class = (n + c_alpha) / np.maximum((n_in_dept + alpha_in_dept)[:, dept], 1e-12)
    return p_dept[:, dept] * p_class, {"(department strength, median class strength) per segment": strengths}


# ---------------------------------------------------------------------------------------------
# 4. User-kNN prior


def knn_mixes(split: Split, k: int, block: int = 1000) -> np.ndarray:
    """For each customer of ``split.rows``: the similarity-weighted class share of their ``k`` most similar
    other customers with history (cosine of the square roots of the class shares)."""
    counts = split.counts
    has = np.flatnonzero(np.diff(counts.indptr) > 0)
    totals = np.asarray(counts[has].sum(axis=1)).ravel()
    shares = sp.diags(1.0 / totals) @ counts[has]
    roots = shares.sqrt().tocsr()              # rows of unit length: the sum of the shares is 1
    position = np.full(counts.shape[0], -1)
    position[has] = np.arange(len(has))
    out = np.zeros((len(split.rows), counts.shape[1]))
    for start in range(0, len(split.rows), block):
        rows = split.rows[start:start + block]
        sim = np.asarray((roots[position[rows]] @ roots.T).todense())
        sim[np.arange(len(rows)), position[rows]] = -1.0          # not oneself
        near = np.argpartition(-sim, k, axis=1)[:, :k]
        weight = np.take_along_axis(sim, near, axis=1)
        weight = sp.csr_matrix((np.maximum(weight, 0.0).ravel(), (np.repeat(np.arange(len(rows)), k), near.ravel())),
                               shape=(len(rows), len(has)))
        mixed = np.asarray((weight @ shares).todense())
        out[start:start + len(rows)] = mixed / np.maximum(mixed.sum(axis=1, keepdims=True), 1e-12)
    return out


def knn_profile(split: Split, neighbours: np.ndarray, share: float) -> np.ndarray:
    prior = share * neighbours + (1 - share) * split.mixes[split.segments[split.rows]]
    prior = prior / np.maximum(prior.sum(axis=1, keepdims=True), 1e-12)
    return smoothed(split.counts, split.rows, prior, PRIOR_LINES)


# ---------------------------------------------------------------------------------------------
# Comparison


def paired(candidate: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Mean per-customer difference and its standard error."""
    diff = candidate - reference
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))


def light(split: Split) -> np.ndarray:
    return np.asarray(split.counts[split.rows].sum(axis=1)).ravel() <= LIGHT_LINES


def candidates_on(split: Split, k: int, chosen: dict | None, only: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """Every candidate's per-customer metrics on ``split``. ``chosen`` None: every setting of every family (the
    validation split chooses among them); else only the chosen setting of each family."""
    out, notes = {}, {}
    base = profile(split)
    out["profile (reference)"] = recall_of(split, base, k)

    def want(family: str, setting: str) -> bool:
        if only and family not in only:
            return False
        return chosen is None or chosen.get(family) == setting

    # 1. EASE alone, and blended with the profile at the chosen EASE setting.
    for kind in ("binary", "sqrt"):
        for zero in (True, False):
            for lam in EASE_LAMBDAS:
                setting = f"{kind}, lambda {lam:g}, {'zero diagonal' if zero else 'ridge (self included)'}"
                blends = {w: f"{setting}, weight {w:g}" for w in BLEND_WEIGHTS}
                if want("ease", setting) or any(want("ease_blend", b) for b in blends.values()):
                    scores = ease_scores(split, kind, lam, zero)
                    if want("ease", setting):
                        out[("ease", setting)] = recall_of(split, scores, k)
                    for w, blend in blends.items():
                        if want("ease_blend", blend):
                            mixed = (1 - w) * scaled(base) + w * scaled(scores)
                            out[("ease_blend", blend)] = recall_of(split, mixed, k)
    # 2. Empirical-Bayes Dirichlet-multinomial.
    for basis in ("lines", "days"):
        for full in (False, True):
            setting = f"{basis}, {'whole vector (Minka)' if full else 'strength only'}"
            if want("dirichlet", setting):
                scores, fitted = eb_dirichlet(split, basis, full)
                out[("dirichlet", setting)] = recall_of(split, scores, k)
                notes[("dirichlet", setting)] = f"fitted prior strength per segment {fitted}"
    # 3. Beta-binomial per class.
    for basis in ("lines", "days"):
        if want("beta_binomial", basis):
            scores, fitted = beta_binomial(split, basis)
            out[("beta_binomial", basis)] = recall_of(split, scores, k)
            notes[("beta_binomial", basis)] = str(fitted)
    # 5. Department then class.
    for basis in ("orders", "lines"):
        if want("nested", basis):
            scores, fitted = nested(split, basis)
            out[("nested", basis)] = recall_of(split, scores, k)
            notes[("nested", basis)] = str(fitted)
    # 4. User-kNN prior.
    for size in KNN_SIZES:
        if (only and "knn" not in only) or chosen is not None and not chosen.get("knn", "").startswith(f"k {size},"):
            continue
        neighbours = knn_mixes(split, size)
        for share in KNN_SHARES:
            setting = f"k {size}, neighbours' share of the prior {share:g}"
            if want("knn", setting):
                out[("knn", setting)] = recall_of(split, knn_profile(split, neighbours, share), k)
    return out, notes


FAMILIES = {"ease": "1. EASE alone", "ease_blend": "1. profile + EASE (row-max scaled blend)",
            "dirichlet": "2. empirical-Bayes Dirichlet-multinomial profile",
            "beta_binomial": "3. beta-binomial per class profile", "knn": "4. user-kNN prior profile",
            "nested": "5. department (in orders) then class, empirical Bayes"}


def choose(found: dict) -> dict:
    """The best setting of each family by mean validation recall."""
    best = {}
    for key, metrics in found.items():
        if isinstance(key, tuple):
            family, setting = key
            value = metrics["recall"].mean()
            if family not in best or value > best[family][1]:
                best[family] = (setting, value)
    return {family: setting for family, (setting, _) in best.items()}


def rows_for(split: Split, found: dict, chosen: dict) -> list[list]:
    reference = found["profile (reference)"]
    few = light(split)
    out = [["profile (reference)", "-", f"{reference['recall'].mean():.4f}", "-",
            f"{reference['recall'][few].mean():.4f}", "-", f"{reference['hit_rate'].mean():.3f}",
            f"{reference['ndcg'].mean():.3f}", f"{reference['discovery'].mean():.3f}"]]
    for family, label in FAMILIES.items():
        if family not in chosen or (family, chosen[family]) not in found:
            continue
        m = found[(family, chosen[family])]
        diff, se = paired(m["recall"], reference["recall"])
        diff_light, se_light = paired(m["recall"][few], reference["recall"][few])
        out.append([label, chosen[family], f"{m['recall'].mean():.4f}", f"{diff:+.4f} ({se:.4f})",
                    f"{m['recall'][few].mean():.4f}", f"{diff_light:+.4f} ({se_light:.4f})",
                    f"{m['hit_rate'].mean():.3f}", f"{m['ndcg'].mean():.3f}", f"{m['discovery'].mean():.3f}"])
    return out


HEADER = ["model", "setting (chosen on validation)", "recall@k", "vs profile (SE)", "recall@k, <= 25 lines",
          "vs profile (SE)", "hit@k", "NDCG@k", "discovery"]


def grid_rows(found: dict) -> list[list]:
    reference = found["profile (reference)"]["recall"]
    out = []
    for key, metrics in found.items():
        if isinstance(key, tuple):
            diff, se = paired(metrics["recall"], reference)
            out.append([FAMILIES[key[0]], key[1], f"{metrics['recall'].mean():.4f}", f"{diff:+.4f} ({se:.4f})"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, default=paths.DEFAULT_ARTIFACTS)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--window-days", type=int, default=182)
    parser.add_argument("--seed", type=int, default=42, help="the run's seed (for the record only)")
    parser.add_argument("--validation-only", action="store_true", help="do not read the evaluation window")
    parser.add_argument("--only", nargs="*", default=(), choices=sorted(FAMILIES),
                        help="measure only these families (exploring)")
    parser.add_argument("--save-settings", type=Path, help="write the settings chosen on validation (JSON)")
    parser.add_argument("--settings-from", type=Path,
                        help="score the window with these settings (another run's --save-settings, e.g. seed 42's) "
                             "instead of this run's validation choice")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    load_before = load_average()
    history, segments, end = load_history(args.artifacts, args.k, args.window_days)
    orders = order_items(args.artifacts, history.items)
    validation = make_split(history, segments, 0, "validation", orders)
    found, notes = candidates_on(validation, args.k, None, tuple(args.only))
    chosen = choose(found)
    if args.save_settings:
        args.save_settings.write_text(json.dumps(chosen, indent=1))
    own_choice = chosen
    if args.settings_from:
        chosen = json.loads(args.settings_from.read_text())
    lines = [f"Input: {args.artifacts} (seed {args.seed}): {history.lines:,} merchandise lines, "
             f"{len(segments):,} segmented customers.", "",
             f"#### Validation split: fit to {history.cuts[0].date()}, scored to {history.cuts[1].date()}, "
             f"{len(validation.rows):,} customers ({light(validation).sum():,} with at most {LIGHT_LINES} lines)",
             "", *_table(["model", "setting", f"recall@{args.k}", "vs profile (SE)"], grid_rows(found)), "",
             "Chosen on this run's validation split:", "", *_table(HEADER, rows_for(validation, found, own_choice)), ""]
    if args.settings_from:
        lines += [f"Settings used on the window: from {args.settings_from.name} (chosen on another run's validation "
                  f"split), on this run's validation split:", "", *_table(HEADER, rows_for(validation, found, chosen)),
                  ""]
    lines += [f"- {FAMILIES[f]}, {s}: {note}" for (f, s), note in notes.items() if own_choice.get(f) == s] + [""]
    print("\n".join(lines), flush=True)
    if not args.validation_only:
        window = make_split(history, segments, 1, "window", orders)
        scored, notes = candidates_on(window, args.k, chosen, tuple(args.only))
        part = [f"#### Evaluation window: fit to {history.cuts[1].date()}, scored to {history.cuts[2].date()}, "
                f"{len(window.rows):,} customers ({light(window).sum():,} with at most {LIGHT_LINES} lines), "
                f"settings as chosen on validation", "", *_table(HEADER, rows_for(window, scored, chosen)), ""]
        part += [f"- {FAMILIES[f]}, {s}: {note}" for (f, s), note in notes.items()] + [""]
        print("\n".join(part), flush=True)
        lines += part
    elapsed = time.perf_counter() - started
    print(f"took {elapsed:.0f} s")
    if args.record:
        command, loads = command_line("bench_recommendation_models.py", argv), load_span(load_before)
        header = [f"\n### Next-best classes, fifth round: model classes not tried before (issue 15, helper r15), "
                  f"{dt.date.today().isoformat()}, seed {args.seed}\n", f"- Machine: {machine()}",
                  f"- Command: `{command.strip()}`", f"- Wall time {elapsed:.0f} s; load average {loads}", ""]
        record("\n".join(header + lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
