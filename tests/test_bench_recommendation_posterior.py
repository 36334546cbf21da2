"""The estimator of benchmarks/bench_recommendation_posterior.py (issue 15, helper c15) computes what it claims.

The benchmark's ceiling rests on three things: the order model's likelihood is the generator's order process
(checked against enumerating every path the process can take), the window's chance of buying a class is the
same process's (checked against simulating it), and the factorised posterior concentrates on the tastes that
drew a long history (the generator's own taste draws, lines simulated from one of them).
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_recommendation_posterior as bench  # noqa: E402

FOCUS = 0.5


def _enumerated(lines, pi, g, sigma):
    """Probability of one order's (department, class) lines, summing every path of the generator's process:
    the order's slot, its mission department, per line focused or not and, if not, its slot."""
    slot_p = (1 - sigma, sigma)
    total = 0.0
    for order_slot, mission in itertools.product((0, 1), range(pi.shape[1])):
        p = slot_p[order_slot] * pi[order_slot, mission]
        for d, c in lines:
            line = 0.0
            for focused, s in itertools.product((True, False), (0, 1)):
                if focused:
                    if s == order_slot and d == mission:
                        line += FOCUS * g[s, d, c]
                else:
                    line += (1 - FOCUS) * slot_p[s] * pi[s, d] * g[s, d, c]
            p *= line
        total += p
    return total


@pytest.mark.parametrize("sigma", [0.0, 0.3])
def test_order_likelihood_equals_the_enumerated_process(sigma):
    rng = np.random.default_rng(1)
    pi = rng.dirichlet(np.ones(3), size=2)  # slot x department
    g = rng.dirichlet(np.ones(2), size=(2, 3))  # slot x department x class
    orders = [[(0, 1), (0, 0), (2, 1)], [(1, 0)], [(2, 0), (2, 0)]]
    flat = [(o, d, c) for o, lines in enumerate(orders) for d, c in sorted(lines)]
    order, dept, cls = (np.array(v) for v in zip(*flat))
    key = order * 10 + dept
    group = np.cumsum(np.r_[True, key[1:] != key[:-1]]) - 1
    group_order = order[np.r_[True, key[1:] != key[:-1]]]
    row = lambda s: (g[s, dept, cls][None, :], pi[s, dept][None, :])  # noqa: E731
    (g_own, pi_own), (g_member, pi_member) = row(0), row(1)
    got = bench.order_log_likelihood(g_own, pi_own, g_member, pi_member, sigma, FOCUS, group, group_order)[0]
    expected = sum(np.log(_enumerated(lines, pi, g, sigma)) for lines in orders)
    assert got == pytest.approx(expected, rel=1e-9)


def test_window_buy_probability_matches_simulation():
    rng = np.random.default_rng(2)
    sigma, n, k = 0.3, 3, 2
    pi = rng.dirichlet(np.ones(3), size=2)
    g = rng.dirichlet(np.ones(2), size=(2, 3))
    classes = [(d, c) for d in range(3) for c in range(2)]
    shape = (1, 1, len(classes))
    arrays = [np.array([g[s, d, c] if kind == "g" else pi[s, d] for d, c in classes]).reshape(shape)
              for s in (0, 1) for kind in ("g", "pi")]
    got = bench.window_buy_probability(*arrays, sigma, FOCUS, n, np.array([k]))[0]
    trials, bought = 10_000, np.zeros(len(classes))
    for _ in range(trials):
        seen = set()
        for _ in range(k):
            order_slot = int(rng.random() < sigma)
            mission = rng.choice(3, p=pi[order_slot])
            for _ in range(n):
                if rng.random() < FOCUS:
                    s, d = order_slot, mission
                else:
                    s = int(rng.random() < sigma)
                    d = rng.choice(3, p=pi[s])
                seen.add((d, rng.choice(2, p=g[s, d])))
        bought += [c in seen for c in classes]
    assert np.abs(got - bought / trials).max() < 0.02


def test_factorised_posterior_concentrates_on_the_draw_behind_a_long_history():
    from core.config import load_config
    from core.generate_data import generator

    cfg = load_config(ROOT / "config" / "config.yml")
    plan = generator.build_plan(cfg.personas, cfg.scenarios, cfg.hierarchy, cfg.data, cfg.generate_data, cfg.seed)
    model = bench.TasteModel(plan)
    persona = 2
    tastes = generator.draw_tastes(np.full(60, persona), plan, np.random.default_rng(3))
    weights, mixes = model.usual_weights(tastes), tastes["department"]
    # Within each department a slot buys, the class chances sum to 1 (usual, exploration and focus together).
    day = np.full(len(model.dept_of_class), 100)
    within = model.class_in_department(weights, persona, plan.day_regime[persona, day], np.arange(len(day)))
    for d in np.flatnonzero(mixes[0] > 0):
        assert within[0, model.dept_of_class == d].sum() == pytest.approx(1.0)
    # 300 orders of 3 lines from alternative 7's tastes, drawn as the order model says.
    rng = np.random.default_rng(4)
    rows = []
    for o in range(300):
        t = int(rng.integers(0, 700))
        regime = plan.day_regime[persona, t]
        pi = model.department_share(mixes[7:8], np.full(len(mixes[7]), regime), np.arange(len(mixes[7])))[0]
        mission = rng.choice(len(pi), p=pi / pi.sum())
        for _ in range(3):
            d = mission if rng.random() < FOCUS else rng.choice(len(pi), p=pi / pi.sum())
            members = np.flatnonzero(model.dept_of_class == d)
            p = model.class_in_department(weights[7:8], persona, np.full(len(members), regime), members)[0]
            rows.append((o, t, d, rng.choice(members, p=p / p.sum())))
    order, t, dept, cls = (np.array(v) for v in zip(*sorted(rows, key=lambda r: (r[0], r[2]))))
    key = order * 100 + dept
    lines = {"class": cls, "dept": dept, "day": t, "group": np.cumsum(np.r_[True, key[1:] != key[:-1]]) - 1,
             "group_order": order[np.r_[True, key[1:] != key[:-1]]]}
    dept_ll, class_ll = bench.factor_weights(model, weights, mixes, persona, lines, FOCUS)
    assert bench.normalised_weights(dept_ll)[0][7] > 0.99
    for d in np.unique(dept):
        if (dept == d).sum() >= 30 and len(np.unique(cls[dept == d])) > 1:
            assert bench.normalised_weights(class_ll[:, d])[0][7] > 0.5
