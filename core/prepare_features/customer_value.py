"""Buy-till-you-die customer-value models: BG/NBD, Gamma-Gamma and the RFM summary they read.

``rfm_summary`` turns an order table into one row per customer (frequency,
recency, age ``T``, mean repeat-order value) following the conventions of the
``lifetimes`` package, so that published fits can be reproduced.
``BetaGeoModel`` (BG/NBD, or MBG/NBD) predicts how many orders a customer will
place and whether they are still active; ``GammaGammaModel`` predicts the value
of their orders. Both are scikit-learn-style estimators: hyper-parameters in
``__init__``, fitted state in attributes ending in ``_``.

``aggregate_orders`` turns order lines into orders with their net merchandise
value, and ``estimate_customer_value`` goes from those orders to each
customer's ``p_alive``, ``expected_orders``, ``expected_revenue`` and
``churn_risk`` over a horizon, with a report of the fit and of every fallback.

References
----------
Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005a). "Counting your
customers" the easy way: an alternative to the Pareto/NBD model. *Marketing
Science* 24(2), 275-284.

Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005b). RFM and CLV: using
iso-value curves for customer base analysis. *Journal of Marketing Research*
42(4), 415-430.

Batislam, E. P., Denizel, M. and Filiztekin, A. (2007). Empirical validation
and comparison of models for customer base analysis. *International Journal
of Research in Marketing* 24(3), 201-209 (the MBG/NBD model).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit, gammaln, hyp2f1
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

__all__ = ["BetaGeoModel", "CustomerValue", "GammaGammaModel", "MonthIndex", "aggregate_orders", "assign_churn_risk",
           "estimate_customer_value", "purchase_clock", "rfm_summary"]


def rfm_summary(transactions: pd.DataFrame, analysis_date, time_unit_days: float = 1.0) -> pd.DataFrame:
    """Summarise an order table into the per-customer inputs of the BG/NBD and Gamma-Gamma models.

    Orders are first merged per customer and calendar day (values summed),
    because the models count purchase occasions, not order rows. This is the
    convention of ``lifetimes.utils.summary_data_from_transaction_data`` with
    ``freq="D"``.

    Parameters
    ----------
    transactions : pandas.DataFrame
        One row per order with columns ``customer_id``, ``order_date``
        (datetime64; the time of day is ignored) and ``order_value`` (net
        value of the order).
    analysis_date : datetime-like
        End of the observation period. Orders on this day count; later ones
        are ignored.
    time_unit_days : float, default 1.0
        Length of the time unit of ``recency`` and ``T`` in days (7 for weeks).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``customer_id`` (customers with at least one order up to
        ``analysis_date``), sorted, with columns:

        ``frequency`` : int
            Number of distinct purchase days minus one (repeat purchases).
        ``recency`` : float
            Time from the first to the last purchase day, in time units.
        ``T`` : float
            Time from the first purchase day to ``analysis_date``, in time units.
        ``monetary_value`` : float
            Mean daily value over the repeat purchase days (the first day is
            excluded); 0 when ``frequency`` is 0. Returns can make it <= 0:
            drop such customers before fitting :class:`GammaGammaModel`.
    """
    if time_unit_days <= 0:
        raise ValueError(f"time_unit_days must be positive, got {time_unit_days}")
    end = pd.Timestamp(analysis_date).normalize()
    day = transactions["order_date"].dt.normalize()
    kept = transactions.loc[day <= end, ["customer_id", "order_value"]].assign(day=day[day <= end])
    daily = kept.groupby(["customer_id", "day"], sort=True)["order_value"].sum().reset_index()
    by_customer = daily.groupby("customer_id", sort=True)
    first, last = by_customer["day"].min(), by_customer["day"].max()
    frequency = by_customer.size() - 1
    # The first day's value is left out: it is not a draw from the repeat-spend process the model describes.
    repeat_total = by_customer["order_value"].sum() - by_customer["order_value"].first()
    unit = pd.Timedelta(days=1) * time_unit_days
    return pd.DataFrame({
        "frequency": frequency.astype("int64"),
        "recency": (last - first) / unit,
        "T": (end - first) / unit,
        "monetary_value": (repeat_total / frequency.where(frequency > 0)).fillna(0.0),
    })


def _as_arrays(*columns) -> list[np.ndarray]:
    """Float copies of ``columns``, checked to be finite, one-dimensional and of equal length."""
    arrays = [np.asarray(c, dtype=float).ravel() for c in columns]
    if len({a.size for a in arrays}) != 1:
        raise ValueError(f"inputs differ in length: {[a.size for a in arrays]}")
    if not all(np.isfinite(a).all() for a in arrays):
        raise ValueError("inputs contain NaN or infinite values")
    return arrays


def _check_bgnbd_inputs(frequency, recency, T) -> list[np.ndarray]:
    """Arrays of a BG/NBD summary, rejecting impossible combinations up front."""
    x, t_x, T = _as_arrays(frequency, recency, T)
    # T == 0 (first purchase on the last day) is allowed: such a customer adds nothing to the
    # likelihood and gets the model's prediction for a brand-new customer.
    if (x < 0).any() or (t_x < 0).any() or (T < 0).any():
        raise ValueError("frequency, recency and T must be >= 0")
    if (t_x > T).any():
        raise ValueError(f"recency exceeds T for {int((t_x > T).sum())} customer(s)")
    return [x, t_x, T]


def _fit_log_params(objective, n_params: int, args: tuple, name: str) -> tuple[np.ndarray, bool, int]:
    """Minimise ``objective`` over log-parameters (keeps them positive without bounds).

    Returns the parameters, whether the optimiser reported success and its
    iteration count. A failed optimisation whose parameters are still finite
    only warns, since its estimate is often usable; non-finite parameters
    raise ``ValueError``.
    """
    result = minimize(objective, np.zeros(n_params), args=args, method="L-BFGS-B")
    params = np.exp(result.x)
    if not np.isfinite(params).all() or not np.isfinite(result.fun):
        raise ValueError(f"{name} fit failed: non-finite parameters {params} or likelihood ({result.message})")
    if not result.success:
        warnings.warn(f"{name} fit did not converge: {result.message}", ConvergenceWarning, stacklevel=3)
    return params, bool(result.success), int(result.get("nit", 0))


def _bgnbd_negative_log_likelihood(log_params, x, t_x, T, weights, penalizer, at_first=False) -> float:
    """Weighted mean negative BG/NBD log-likelihood (Fader, Hardie & Lee 2005a, eq. 6).

    With ``at_first`` the MBG/NBD variant (Batislam, Denizel & Filiztekin
    2007): a customer may also drop out right after the first purchase.
    """
    r, alpha, a, b = params = np.exp(log_params)
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    if at_first:
        # B(a, b+x+1) and B(a+1, b+x) over B(a, b+x): every purchase, the first included, may be the last.
        a2 = a2 - np.log(a + b + x)
        a3 = np.log(b + x) - (r + x) * np.log(alpha + T)
        a4 = np.log(a) - (r + x) * np.log(alpha + t_x)
    else:
        a3 = -(r + x) * np.log(alpha + T)
        # The second term only exists for repeat buyers; -inf drops it inside logaddexp.
        a4 = np.where(x > 0, np.log(a) - np.log(b + np.maximum(x, 1) - 1) - (r + x) * np.log(alpha + t_x), -np.inf)
    log_likelihood = a1 + a2 + np.logaddexp(a3, a4)
    return -(weights @ log_likelihood) / weights.sum() + penalizer * (params @ params)


class BetaGeoModel(BaseEstimator):
    """BG/NBD model of repeat purchases (Fader, Hardie & Lee 2005a), or its MBG/NBD variant.

    While active, a customer buys at Poisson rate ``lambda ~ Gamma(r, alpha)``;
    after each repeat purchase they drop out with probability ``p ~ Beta(a, b)``.
    BG/NBD gives the first purchase no such chance, so a customer who never
    came back is certainly still active (``p_alive == 1``), however long ago
    they bought. The MBG/NBD variant (Batislam, Denizel & Filiztekin 2007;
    ``mbgnbd`` in BTYDplus, ``ModifiedBetaGeoFitter`` in ``lifetimes``) lets
    the first purchase be the last too, so silence after one purchase lowers
    ``p_alive`` as it does after several.

    Parameters
    ----------
    penalizer : float, default 0.0
        L2 penalty on the four parameters, added to the mean negative
        log-likelihood (the ``penalizer_coef`` of ``lifetimes``); shrinks
        them on small or degenerate data.
    dropout_at_first_purchase : bool, default False
        ``True`` fits MBG/NBD instead of BG/NBD.

    Attributes
    ----------
    params_ : dict
        Fitted ``r``, ``alpha`` (in the time unit of the inputs), ``a``, ``b``.
    converged_ : bool
        Whether the optimiser reported convergence. ``False`` comes with a
        ``ConvergenceWarning``; the parameters are then finite but may be
        imprecise. A fit ending on non-finite parameters raises ``ValueError``.
    n_iter_ : int
        Iterations of the optimiser.
    n_customers_ : int
        Number of customers the model was fitted on.
    """

    def __init__(self, penalizer: float = 0.0, dropout_at_first_purchase: bool = False):
        self.penalizer = penalizer
        self.dropout_at_first_purchase = dropout_at_first_purchase

    def fit(self, frequency, recency, T) -> "BetaGeoModel":
        """Fit by maximum likelihood.

        Parameters
        ----------
        frequency : array-like
            Repeat purchases ``x`` of each customer.
        recency : array-like
            Time of the last purchase ``t_x``, from the first purchase.
        T : array-like
            Age of the customer: first purchase to the end of observation.
            ``recency`` and ``T`` share one time unit.

        Returns
        -------
        BetaGeoModel
            The fitted model.
        """
        x, t_x, T = _check_bgnbd_inputs(frequency, recency, T)
        # Customers with identical summaries share one likelihood term: far fewer evaluations on big data.
        rows, weights = np.unique(np.column_stack([x, t_x, T]), axis=0, return_counts=True)
        args = (*rows.T, weights.astype(float), self.penalizer, bool(self.dropout_at_first_purchase))
        name = "MBG/NBD" if self.dropout_at_first_purchase else "BG/NBD"
        params, self.converged_, self.n_iter_ = _fit_log_params(_bgnbd_negative_log_likelihood, 4, args, name)
        self.params_ = dict(zip(("r", "alpha", "a", "b"), params.tolist()))
        self.n_customers_ = int(x.size)
        return self

    def p_alive(self, frequency, recency, T) -> np.ndarray:
        """Probability that each customer is still active at ``T``.

        Parameters
        ----------
        frequency, recency, T : array-like
            As in :meth:`fit`.

        Returns
        -------
        numpy.ndarray
            One probability per customer. Under BG/NBD exactly 1 when
            ``frequency`` is 0, because customers can only drop out right
            after a repeat purchase; under MBG/NBD below 1 for everyone.
        """
        check_is_fitted(self, "params_")
        x, t_x, T = _check_bgnbd_inputs(frequency, recency, T)
        r, alpha, a, b = self.params_.values()
        # 1 / (1 + odds of having dropped out), with the odds kept in logs: (alpha+T)^(r+x) overflows.
        growth = (r + x) * np.log((alpha + T) / (alpha + t_x))
        if self.dropout_at_first_purchase:
            return expit(-(np.log(a) - np.log(b + x) + growth))
        log_odds = np.log(a) - np.log(b + np.maximum(x, 1) - 1) + growth
        return np.where(x > 0, expit(-log_odds), 1.0)

    def expected_orders(self, t, frequency, recency, T) -> np.ndarray:
        """Expected number of purchases in ``(T, T + t]`` given each customer's history.

        Parameters
        ----------
        t : float or array-like
            Length of the prediction period, in the time unit of the fit.
        frequency, recency, T : array-like
            As in :meth:`fit`.

        Returns
        -------
        numpy.ndarray
            Expected purchases per customer (Fader, Hardie & Lee 2005a, eq. 10;
            for MBG/NBD the same with ``b`` and ``a + b - 1`` one higher in
            the hypergeometric term).
        """
        check_is_fitted(self, "params_")
        x, t_x, T = _check_bgnbd_inputs(frequency, recency, T)
        t = np.asarray(t, dtype=float)
        r, alpha, a, b = self.params_.values()
        shift = 1.0 if self.dropout_at_first_purchase else 0.0
        big_a, big_b, big_c, z = r + x, b + x + shift, a + b + x - 1 + shift, t / (alpha + T + t)
        log_decay = (r + x) * np.log((alpha + T) / (alpha + T + t))
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            direct = hyp2f1(big_a, big_b, big_c, z)
            # Euler's transformation gives the same value where the direct series overflows.
            log_euler = np.log(hyp2f1(big_c - big_a, big_c - big_b, big_c, z)) + (big_c - big_a - big_b) * np.log1p(-z)
            # 1 - decay * 2F1, in logs (exact near 0) where 2F1 > 0. BG/NBD with a + b < 1 makes big_c < 0
            # for x = 0 and the function negative there: no log, and no cancellation either.
            failed = ~np.isfinite(direct) & ~np.isfinite(log_euler)
            if failed.any():
                direct = direct.copy()
                direct[failed] = _hyp2f1_series(*np.broadcast_arrays(big_a, big_b, big_c, z), failed)
            log_hyp = np.where(np.isfinite(direct) & (direct > 0), np.log(direct), log_euler)
            remaining = np.where(np.isfinite(direct) & (direct <= 0), 1 - direct * np.exp(log_decay),
                                 -np.expm1(log_hyp + log_decay))
        # a < 1 makes both factors negative; their product stays positive (a == 1 is a removable singularity).
        return big_c / (a - 1) * remaining * self.p_alive(x, t_x, T)


def _hyp2f1_series(a, b, c, z, where, max_terms: int = 10_000) -> np.ndarray:
    """Gauss's series for 2F1 at the entries ``where``; NaN where it has not converged.

    SciPy's ``hyp2f1`` returns NaN for very large ``a`` with small ``z`` (a
    fit on a handful of repeat buyers can send ``r`` and ``alpha`` to 1e5
    and beyond); the series converges there, since ``z < 1``.
    """
    a, b, c, z = (np.asarray(v, dtype=float)[where] for v in (a, b, c, z))
    term, total = np.ones_like(z), np.ones_like(z)
    for n in range(max_terms):
        term = term * (a + n) * (b + n) / ((c + n) * (n + 1)) * z
        total = total + term
        if np.all(np.abs(term) <= 1e-16 * np.abs(total)):
            return total
    return np.full_like(z, np.nan)


def _gamma_gamma_negative_log_likelihood(log_params, x, m, penalizer) -> float:
    """Mean negative Gamma-Gamma log-likelihood of mean order values ``m`` over ``x`` orders."""
    p, q, v = params = np.exp(log_params)
    px = p * x
    log_likelihood = (gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(v)
                      + (px - 1) * np.log(m) + px * np.log(x) - (px + q) * np.log(x * m + v))
    return -log_likelihood.mean() + penalizer * (params @ params)


class GammaGammaModel(BaseEstimator):
    """Gamma-Gamma model of order values (Fader, Hardie & Lee 2005b).

    Each order of a customer has value ``~ Gamma(p, nu)`` with the customer's
    ``nu ~ Gamma(q, v)``; order values are assumed independent of frequency.

    Parameters
    ----------
    penalizer : float, default 0.0
        L2 penalty on ``p``, ``q``, ``v``, added to the mean negative
        log-likelihood (as in ``lifetimes``).

    Attributes
    ----------
    params_ : dict
        Fitted ``p``, ``q``, ``v``.
    population_mean_ : float
        Expected order value of a customer with no repeat purchase:
        ``v * p / (q - 1)``, or the sample mean of the fitted monetary values
        when ``q <= 1`` (the model's mean is then infinite).
    converged_ : bool
        As in :class:`BetaGeoModel`.
    n_iter_ : int
        Iterations of the optimiser.
    n_customers_ : int
        Number of customers the model was fitted on.
    """

    def __init__(self, penalizer: float = 0.0):
        self.penalizer = penalizer

    def fit(self, frequency, monetary_value) -> "GammaGammaModel":
        """Fit by maximum likelihood on repeat buyers.

        Parameters
        ----------
        frequency : array-like
            Repeat purchases of each customer; all must be > 0.
        monetary_value : array-like
            Mean value of those repeat purchases; all must be > 0.

        Returns
        -------
        GammaGammaModel
            The fitted model.

        Raises
        ------
        ValueError
            On non-positive values (filter to ``frequency > 0`` and
            ``monetary_value > 0`` first) or fewer than 2 customers.
        """
        x, m = _as_arrays(frequency, monetary_value)
        for name, values in (("frequency", x), ("monetary_value", m)):
            if (values <= 0).any():
                raise ValueError(f"GammaGammaModel needs positive {name}: {int((values <= 0).sum())} value(s) "
                                 f"<= 0; fit on repeat buyers with positive spend only")
        if x.size < 2:
            raise ValueError(f"GammaGammaModel needs at least 2 repeat buyers, got {x.size}")
        params, self.converged_, self.n_iter_ = _fit_log_params(
            _gamma_gamma_negative_log_likelihood, 3, (x, m, self.penalizer), "Gamma-Gamma")
        self.params_ = dict(zip(("p", "q", "v"), params.tolist()))
        p, q, v = params
        self.population_mean_ = float(v * p / (q - 1)) if q > 1 else float(m.mean())
        self.n_customers_ = int(x.size)
        return self

    def expected_order_value(self, frequency, monetary_value) -> np.ndarray:
        """Conditional expected value of a customer's future orders.

        Parameters
        ----------
        frequency : array-like
            Repeat purchases (0 allowed).
        monetary_value : array-like
            Mean value of the repeat purchases (ignored when frequency is 0).

        Returns
        -------
        numpy.ndarray
            ``p (v + x m) / (p x + q - 1)`` for repeat buyers, a weighted mean
            of the population mean and the customer's own mean;
            ``population_mean_`` for customers with frequency 0.
        """
        check_is_fitted(self, "params_")
        x, m = _as_arrays(frequency, monetary_value)
        if (x < 0).any() or (m < 0).any():
            raise ValueError("frequency and monetary_value must be >= 0")
        p, q, v = self.params_.values()
        with np.errstate(divide="ignore", invalid="ignore"):
            posterior = p * (v + x * m) / (p * x + q - 1)
        return np.where(x > 0, posterior, self.population_mean_)


# ---------------------------------------------------------------------------------------------
# A seasonal clock for the purchase model

MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=float)


def _day_numbers(dates) -> np.ndarray:
    """Whole days since 1970-01-01 of datetime-like ``dates`` (the time of day dropped)."""
    return np.asarray(pd.to_datetime(np.asarray(dates)).normalize().to_numpy("datetime64[D]").astype(np.int64))


def _month_table(low: int, n_days: int) -> tuple[np.ndarray, np.ndarray]:
    """Month (0-11) of each of the ``n_days`` days from day number ``low``, and their running counts.

    The counts have ``n_days + 1`` rows: row ``k`` holds how many days of
    each month lie in ``[low, low + k)``.
    """
    months = pd.date_range(pd.Timestamp(low, unit="D"), periods=max(n_days, 0), freq="D").month.to_numpy() - 1
    counts = np.zeros((months.size + 1, 12))
    counts[np.arange(1, months.size + 1), months] = 1.0
    return months, np.cumsum(counts, axis=0)


def _in_between_days(customer_id, order_date) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What :class:`MonthIndex` is fitted on: in-between purchase days by month and their exposures.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray)
        Purchase days strictly between a customer's first and last, by
        month (12); one row per distinct (first, last) pair of days, the
        days of each month strictly between them (``(pairs, 12)``); and the
        in-between purchase days of the customers of each pair.
    """
    owner = pd.factorize(np.asarray(customer_id))[0].astype(np.int64)
    day = _day_numbers(order_date)
    if owner.size != day.size:
        raise ValueError(f"customer_id and order_date differ in length: {owner.size} and {day.size}")
    low = int(day.min()) if day.size else 0
    key = np.sort(owner << 32 | (day - low))  # by customer then day; a plain sort beats np.unique's hashing
    key = key[np.r_[True, key[1:] != key[:-1]]] if key.size else key  # distinct purchase days
    owner, day = key >> 32, key & 0xFFFFFFFF
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    ends = np.r_[starts[1:], owner.size] - 1
    inner = np.ones(owner.size, dtype=bool)
    inner[starts], inner[ends] = False, False
    months, table = _month_table(low, int(day.max()) + 1 if day.size else 0)
    events = np.bincount(months[day[inner]], minlength=12).astype(float)
    per_customer = ends - starts - 1
    has = per_customer > 0
    # Customers with the same first and last day share one exposure row: the days strictly between.
    pair_key = day[starts[has]] << 32 | day[ends[has]]
    pairs, where = np.unique(pair_key, return_inverse=True)
    weights = np.bincount(where, weights=per_customer[has], minlength=pairs.size)
    exposure = table[pairs & 0xFFFFFFFF] - table[(pairs >> 32) + 1]
    return events, exposure, weights


class MonthIndex(BaseEstimator):
    """Month-of-year purchase intensity: the seasonal clock the purchase model runs on.

    BG/NBD and its kin assume a constant buying rate while a customer is
    active. Retail buying is seasonal: a customer first seen in November buys
    at December's pace, which the model carries into the whole next year,
    and a horizon over December holds more purchases than its length says.
    With a rate ``lambda * s(t)`` (``s`` the month-of-year factor), the
    process in *operational time* ``tau(t) = integral of s`` is the model's
    own, so the model is fitted and predicts on ``tau`` instead of days.

    The factors come from a likelihood in which each customer's own rate and
    dropout cancel: given a repeat buyer's first and last purchase days, the
    purchase days in between fall independently with density proportional
    to ``s`` (the dropout decisions are coin flips at purchases, not at
    times). So ``s`` maximises ``sum over in-between days of log s(day)
    minus sum over customers of (in-between days) * log(integral of s from
    first to last)``. A Gaussian prior on the log factors (sd
    ``prior_sd`` about 1, and ``smoothness_sd`` between neighbouring
    months, December next to January) keeps them at 1 with little data and
    lets a month never observed take its neighbours' level. The factors are
    scaled to average 1 over the days of a year, so operational days are
    days on average.

    Parameters
    ----------
    prior_sd, smoothness_sd : float, default 0.5
        Prior standard deviations of a log factor and of the difference of
        neighbouring log factors.

    Attributes
    ----------
    factors_ : numpy.ndarray
        Twelve factors, January first.
    in_between_days_ : int
        Purchase days between a customer's first and last that the factors were estimated from.
    converged_ : bool
    """

    def __init__(self, prior_sd: float = 0.5, smoothness_sd: float = 0.5):
        self.prior_sd = prior_sd
        self.smoothness_sd = smoothness_sd

    def fit(self, customer_id, order_date) -> "MonthIndex":
        """Estimate the factors from purchase occasions (one customer and date per order; days merged).

        Parameters
        ----------
        customer_id : array-like
        order_date : array-like of datetime-like
            The time of day is ignored.

        Returns
        -------
        MonthIndex
        """
        if not (self.prior_sd > 0 and self.smoothness_sd > 0):
            raise ValueError(f"prior_sd and smoothness_sd must be positive, got {self.prior_sd}, {self.smoothness_sd}")
        events, exposure, weights = _in_between_days(customer_id, order_date)
        result = minimize(self._objective, np.zeros(12), args=(events, exposure, weights), jac=True,
                          method="L-BFGS-B")
        if not np.isfinite(result.x).all():
            raise ValueError(f"month index fit failed: non-finite factors ({result.message})")
        factors = np.exp(result.x)
        self.factors_ = factors * 365.0 / (_DAYS_IN_MONTH @ factors)
        self.in_between_days_ = int(events.sum())
        self.converged_ = bool(result.success)
        return self

    def _objective(self, theta, events, exposure, weights):
        """Negative penalised log-likelihood of the in-between purchase days and its gradient."""
        factors = np.exp(theta)
        spans = exposure @ factors
        step = theta - np.roll(theta, 1)
        value = (events @ theta - weights @ np.log(spans)
                 - theta @ theta / (2 * self.prior_sd ** 2) - step @ step / (2 * self.smoothness_sd ** 2))
        gradient = (events - factors * ((weights / spans) @ exposure)
                    - theta / self.prior_sd ** 2 - (step - np.roll(step, -1)) / self.smoothness_sd ** 2)
        return -value, -gradient

    def clock(self, start, stop) -> np.ndarray:
        """Operational days from ``start`` to ``stop``: the sum of the factors of the days in ``[start, stop)``.

        Parameters
        ----------
        start, stop : array-like of datetime-like (broadcast together)

        Returns
        -------
        numpy.ndarray
            Non-negative where ``stop >= start``; ``stop - start`` in days
            when every factor is 1.
        """
        return self.clock_days(_day_numbers(np.atleast_1d(start)), _day_numbers(np.atleast_1d(stop)))

    def clock_days(self, start, stop) -> np.ndarray:
        """:meth:`clock` for whole day numbers (days since 1970-01-01), the form the fit works in."""
        check_is_fitted(self, "factors_")
        first, last = np.broadcast_arrays(np.asarray(start, dtype=np.int64), np.asarray(stop, dtype=np.int64))
        if first.size == 0:
            return np.zeros(first.shape)
        low = int(min(first.min(), last.min()))
        _, table = _month_table(low, int(max(first.max(), last.max())) - low)
        cumulative = table @ self.factors_
        return cumulative[last - low] - cumulative[first - low]


# ---------------------------------------------------------------------------------------------
# From order lines to per-customer estimates

ORDER_LINE_COLUMNS = ("customer_id", "order_id", "order_date", "department", "line_amount", "is_return",
                      "original_order_id")
CHURN_RISK_LEVELS = ("low", "medium", "high")
DEFAULT_CHURN_THRESHOLDS = (0.3, 0.7)
"""``p_alive`` below the first is ``high`` risk, below the second ``medium``, else ``low``.

Measured on the default synthetic data (``benchmarks/bench_customer_value.py``, MBG/NBD): below
0.3, under 2% of the customers were truly active at the analysis date and under 3% bought again in
the next 365 days ("probably gone"); at 0.7 or more, 89% were active and 88% bought again; in
between about 40% did: the band where a retention message can change something. A first cut of
0.5 let nearly twice as many active customers into ``high``; a second cut of 0.8 moved customers
of whom 65% were active out of ``low``. On CDNOW, where customers buy a few times a year at most,
79% of the customers fall in ``medium``, and ``high`` (quiet repeat buyers) bought again slightly
more often than ``medium`` (mostly one-time buyers), 30% against 22%: ``churn_risk`` says whether a
customer is probably still a customer, not how soon they will buy.
"""
# Fewest repeat buyers to fit either model, measured on CDNOW subsamples (100-200 draws per size):
# with 10 repeat buyers MBG/NBD went degenerate (r > 100) in 20% of the draws, with 20 in 3% and
# failed outright in 2%, with 50 in 1% and never failed. Gamma-Gamma fits failed in 1 of 200 draws
# with 5 or with 10 repeat buyers and never from 20; with 50 its population mean was within 8.5% of
# the full fit's (median), as accurate as the plain sample mean.
MIN_REPEAT_BUYERS = 50
# Below this share of repeat buyers the split between a low buying rate and early dropout is poorly
# determined: on BG/NBD draws of 10,000 customers with 3% repeat buyers the mean MBG/NBD p_alive
# ranged from 0.38 to 0.88 across seeds (from 0.84 to 0.96 with 20%), while expected orders held.
LOW_REPEAT_SHARE = 0.10


def aggregate_orders(lines: pd.DataFrame, non_merchandise_departments=(), as_of=None) -> pd.DataFrame:
    """One row per purchase order with its net merchandise value.

    Which lines count
        Lines of the departments in ``non_merchandise_departments`` (bag
        levy, gift cards, charity, concessions, goods not for resale,
        data-quality departments: the hierarchy's kinds other than
        ``merchandise``) are dropped; every other department, ``Unknown``
        included, is merchandise, as for stage 02's spend lines. A purchase
        order with no merchandise line is not an order here.
    Returns
        A return line is subtracted from the purchase order it names in
        ``original_order_id``, so an order's value is what the customer kept
        and the order stays on the day it was bought (the models count
        purchase occasions; a return is not one). Returns dated after
        ``as_of`` are ignored: at that date they had not happened yet, so a
        temporal holdout sees no future. A return without a purchase in the
        table (no link, or a purchase before the history or dropped above)
        cannot be placed on an order and is left out; their count and value
        are in ``result.attrs``. A customer with only such returns has no
        order, hence no estimate.

    Money is summed in whole cents, so the values are exact.

    Parameters
    ----------
    lines : pandas.DataFrame
        Order lines with at least the columns ``customer_id``, ``order_id``,
        ``order_date`` (datetime64), ``department``, ``line_amount`` (negative
        on return lines), ``is_return`` and ``original_order_id`` (null on
        purchase lines).
    non_merchandise_departments : iterable of str, default ()
        Departments whose lines are not customer spend, e.g.
        ``[name for name, d in hierarchy.departments.items() if d.kind != "merchandise"]``.
    as_of : datetime-like, optional
        Last day of lines to read (the analysis date); all lines when omitted.

    Returns
    -------
    pandas.DataFrame
        Sorted by ``customer_id``, ``order_date``, ``order_id``; columns
        ``customer_id``, ``order_id``, ``order_date``, ``gross_value``
        (merchandise bought), ``returned_value`` (>= 0, returned by ``as_of``)
        and ``order_value`` (gross minus returned). ``attrs`` holds
        ``unlinked_return_lines`` and ``unlinked_return_value`` (>= 0).
    """
    missing = [c for c in ORDER_LINE_COLUMNS if c not in lines.columns]
    if missing:
        raise ValueError(f"order lines lack column(s) {missing}; expected {list(ORDER_LINE_COLUMNS)}")
    keep = ~lines["department"].isin(list(non_merchandise_departments)).to_numpy(dtype=bool)
    if as_of is not None:
        keep &= (lines["order_date"].dt.normalize() <= pd.Timestamp(as_of).normalize()).to_numpy(dtype=bool)
    kept = lines.loc[keep]
    cents = np.round(kept["line_amount"].to_numpy(dtype=float) * 100).astype(np.int64)
    is_return = kept["is_return"].to_numpy(dtype=bool)
    purchases = pd.DataFrame({"order_id": kept["order_id"].to_numpy()[~is_return],
                              "customer_id": kept["customer_id"].to_numpy()[~is_return],
                              "order_date": kept["order_date"].to_numpy()[~is_return],
                              "cents": cents[~is_return]})
    orders = purchases.groupby("order_id", sort=True).agg(
        customer_id=("customer_id", "first"), order_date=("order_date", "first"), gross=("cents", "sum"))
    returns = pd.DataFrame({"original_order_id": kept["original_order_id"].to_numpy()[is_return],
                            "cents": cents[is_return]})
    linked = returns["original_order_id"].isin(orders.index).to_numpy(dtype=bool)
    returned = -returns[linked].groupby("original_order_id")["cents"].sum()
    returned = returned.reindex(orders.index, fill_value=0).to_numpy(dtype=np.int64)
    gross = orders["gross"].to_numpy(dtype=np.int64)
    result = pd.DataFrame({
        "customer_id": orders["customer_id"].to_numpy(),
        "order_id": orders.index.to_numpy(),
        "order_date": orders["order_date"].to_numpy(),
        "gross_value": gross / 100,
        "returned_value": returned / 100,
        "order_value": (gross - returned) / 100,
    }).sort_values(["customer_id", "order_date", "order_id"], kind="stable", ignore_index=True)
    result.attrs.update(unlinked_return_lines=int((~linked).sum()),
                        unlinked_return_value=float(-returns["cents"].to_numpy()[~linked].sum() / 100))
    return result


def _check_thresholds(thresholds) -> tuple[float, float]:
    high_below, medium_below = (float(v) for v in thresholds)
    if not 0.0 <= high_below <= medium_below <= 1.0:
        raise ValueError(f"churn thresholds must satisfy 0 <= high_below <= medium_below <= 1, "
                         f"got {tuple(thresholds)}")
    return high_below, medium_below


def assign_churn_risk(p_alive, thresholds=DEFAULT_CHURN_THRESHOLDS) -> pd.Categorical:
    """``high`` where ``p_alive < thresholds[0]``, ``medium`` where below ``thresholds[1]``, else ``low``.

    Parameters
    ----------
    p_alive : array-like
        Probabilities in [0, 1].
    thresholds : (float, float), default :data:`DEFAULT_CHURN_THRESHOLDS`
        ``(high_below, medium_below)`` with ``0 <= high_below <= medium_below <= 1``.

    Returns
    -------
    pandas.Categorical
        Ordered categories ``low < medium < high``.
    """
    high_below, medium_below = _check_thresholds(thresholds)
    alive = np.asarray(p_alive, dtype=float)
    if not np.isfinite(alive).all():
        raise ValueError("p_alive contains NaN or infinite values")
    codes = np.where(alive < high_below, 2, np.where(alive < medium_below, 1, 0))
    return pd.Categorical.from_codes(codes, categories=list(CHURN_RISK_LEVELS), ordered=True)


@dataclasses.dataclass(frozen=True)
class CustomerValue:
    """What :func:`estimate_customer_value` returns.

    Attributes
    ----------
    estimates : pandas.DataFrame
        One row per customer with an order up to the analysis date (see
        :func:`estimate_customer_value`).
    purchase_model : BetaGeoModel
        Fitted on each customer's frequency, recency and age in the chosen time unit.
    value_model : GammaGammaModel or None
        Fitted on repeat buyers with positive mean repeat spend; ``None``
        when the population-mean fallback was used.
    report : dict
        JSON-ready account of the fit: parameters, convergence, customers
        used, fallbacks taken and why (see :func:`estimate_customer_value`).
    month_index : MonthIndex or None
        The seasonal clock the purchase model ran on; ``None`` for calendar days.
    """

    estimates: pd.DataFrame
    purchase_model: BetaGeoModel
    value_model: GammaGammaModel | None
    report: dict
    month_index: MonthIndex | None = None


def purchase_clock(recency_days, age_days, analysis_date, horizon_days: float, time_unit_days: float,
                   month_index: "MonthIndex | None" = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recency, age and horizon in the purchase model's time: days, or seasonal days of ``month_index``.

    A customer's first purchase day is ``analysis_date - age_days`` and last
    ``first + recency_days``; age runs to the analysis date and the horizon
    covers the ``horizon_days`` days after it. In seasonal days each day
    counts its month's factor (:class:`MonthIndex`), a fraction of a day at
    the horizon's end pro rata.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray)
        ``t_x``, ``T`` and the horizon (one value per customer), in units of ``time_unit_days``.
    """
    recency_days, age_days = np.asarray(recency_days, dtype=float), np.asarray(age_days, dtype=float)
    if month_index is None:
        return (recency_days / time_unit_days, age_days / time_unit_days,
                np.full(age_days.shape, horizon_days / time_unit_days))
    end = int(_day_numbers([analysis_date])[0])
    first = end - np.rint(age_days).astype(np.int64)
    last = first + np.rint(recency_days).astype(np.int64)
    whole = int(np.floor(horizon_days))
    horizon = (month_index.clock_days(end + 1, end + 1 + whole)
               + (horizon_days - whole) * month_index.clock_days(end + 1 + whole, end + 2 + whole))
    return (month_index.clock_days(first, last) / time_unit_days, month_index.clock_days(first, end) / time_unit_days,
            np.full(age_days.shape, float(horizon) / time_unit_days))


def estimate_customer_value(orders: pd.DataFrame, analysis_date=None, horizon_days: float = 365,
                            thresholds=DEFAULT_CHURN_THRESHOLDS, *, time_unit_days: float = 7.0,
                            dropout_at_first_purchase: bool = True, seasonal_index: bool = True,
                            min_repeat_buyers: int = MIN_REPEAT_BUYERS, penalizer: float = 0.0,
                            fit_sample_size: int | None = None) -> CustomerValue:
    """Per-customer probability of being active, expected orders and revenue over a horizon, churn risk.

    Orders are merged per customer and day (:func:`rfm_summary`); a purchase
    model (:class:`BetaGeoModel`, MBG/NBD by default) gives ``p_alive`` and
    ``expected_orders``, a Gamma-Gamma model the value of each future order.

    Decisions
        *Time unit*: weeks by default. Fits in days and in weeks converge to
        the same parameters (to 4 significant digits on CDNOW, the default
        synthetic data and a million drawn customers) and the same
        predictions (relative differences about 1e-4, the optimiser's
        tolerance); weeks put ``alpha`` near the optimiser's starting point
        of 1 and took as many or fewer iterations (13 against 16 on the
        synthetic data), and are the unit of the published CDNOW fits.
        *Seasonal clock by default*: the purchase model is fitted and
        predicts in seasonal days (:class:`MonthIndex`, estimated from the
        same orders): a day of a busy month counts more than a day of a
        quiet one, in the history and in the horizon. On the default
        synthetic data, whose visits follow month weights, calendar days
        over-forecast a 365-day holdout by 11.6% (customers first seen in
        the December peak carry its pace into a whole year) and
        under-forecast a 182-day one over December by 9.1%; seasonal days
        give +0.1% and +0.6%. ``seasonal_index=False`` runs on calendar days
        (the published CDNOW fits are in calendar weeks); so does a month
        index whose fit fails, with a note in the report.
        *MBG/NBD by default*: under BG/NBD every customer who bought once is
        certainly active (``p_alive == 1``) however long ago that was; on
        CDNOW that is 60% of the customers and ``p_alive`` then ranks who
        bought again in the holdout worse than chance (ROC AUC 0.32 against
        0.69 for MBG/NBD). ``dropout_at_first_purchase=False`` gives BG/NBD.
        *Zero or negative spend*: a repeat buyer whose mean repeat-day value
        is <= 0 after returns is left out of the Gamma-Gamma fit (it needs
        positive spend) and gets an expected order value of 0: their repeat
        orders so far were worth nothing net, and the population mean would
        credit a customer who returns everything with an average customer's
        spend. ``expected_orders`` and ``p_alive`` are unaffected.
        *Few repeat buyers*: with fewer than ``min_repeat_buyers`` repeat
        buyers in all, the purchase model cannot tell a buying rate from
        dropout (fits go degenerate): ``ValueError``. With enough repeat
        buyers but fewer than ``min_repeat_buyers`` of positive spend, or
        when the Gamma-Gamma fit fails, every customer's expected order value
        is the population mean net value per purchase day (all purchase
        days, first ones included; 0 if that is negative), which is what
        Gamma-Gamma itself predicts for a customer with no repeat purchase.
        The report says so (``fallback``, ``fallback_reason``). Under 10%
        repeat buyers the report notes that ``p_alive`` is uncertain.
        *History shorter than the horizon*: allowed; the fitted rates are
        extrapolated past anything observed, and the report notes it.
        *Convergence*: a fit that stops early with finite parameters is kept
        (``ConvergenceWarning``, ``converged: false`` in the report); a fit
        with non-finite parameters, or any non-finite estimate, raises
        ``ValueError``: no column is ever NaN.

    Parameters
    ----------
    orders : pandas.DataFrame
        One row per order: ``customer_id``, ``order_date`` (datetime64) and
        ``order_value`` (net merchandise value, e.g. from :func:`aggregate_orders`).
    analysis_date : datetime-like, optional
        End of the observed history; defaults to the last order date. Later
        orders are ignored.
    horizon_days : float, default 365
        Length of the prediction period after ``analysis_date``.
    thresholds : (float, float), default :data:`DEFAULT_CHURN_THRESHOLDS`
        ``(high_below, medium_below)`` on ``p_alive`` (:func:`assign_churn_risk`).
    time_unit_days : float, default 7.0
        Time unit of the fits, in days.
    dropout_at_first_purchase : bool, default True
        MBG/NBD (``True``) or BG/NBD (``False``).
    seasonal_index : bool, default True
        Run the purchase model on seasonal days (:class:`MonthIndex`) rather than calendar days.
    min_repeat_buyers : int, default :data:`MIN_REPEAT_BUYERS`
        Fewest repeat buyers to fit the purchase model (else ``ValueError``),
        and fewest with positive spend to fit Gamma-Gamma (else the
        population-mean fallback).
    penalizer : float, default 0.0
        L2 penalty of both fits.
    fit_sample_size : int, optional
        Fit both models on at most this many customers (drawn with
        :func:`fit_sample`, the same for the same orders) and predict for
        everyone; None fits on every customer. The counts of the report
        (repeat buyers, ...) are always over every customer.

    Returns
    -------
    CustomerValue
        ``estimates`` is indexed by ``customer_id`` (sorted) with columns
        ``frequency`` (repeat purchase days), ``recency_days``, ``age_days``
        (first purchase to last, and to the analysis date),
        ``monetary_value`` (mean repeat-day value), ``p_alive``,
        ``expected_orders`` (purchase days in the horizon),
        ``expected_order_value``, ``expected_revenue``
        (``expected_orders * expected_order_value``) and ``churn_risk``
        (ordered categorical ``low < medium < high``).

    Raises
    ------
    ValueError
        On missing columns, a non-positive horizon or time unit, bad
        thresholds, no order up to the analysis date, too few repeat buyers, a fit
        ending on non-finite parameters, or a non-finite estimate.
    """
    high_below, medium_below = _check_inputs(orders, horizon_days, time_unit_days, thresholds)
    end = (pd.Timestamp(analysis_date) if analysis_date is not None else orders["order_date"].max()).normalize()
    on_or_before = (orders["order_date"].dt.normalize() <= end).to_numpy(dtype=bool)
    if not on_or_before.any():
        raise ValueError(f"no order on or before the analysis date {end.date()}")
    summary = rfm_summary(orders, end, time_unit_days=1.0)
    x, t_x_days, age_days = (summary[c].to_numpy(dtype=float) for c in ("frequency", "recency", "T"))
    m = summary["monetary_value"].to_numpy(dtype=float)
    repeat = x > 0
    if repeat.sum() < min_repeat_buyers:
        raise ValueError(f"{int(repeat.sum())} of the {len(summary)} customers bought on two different days "
                         f"up to {end.date()}; the purchase model needs at least min_repeat_buyers="
                         f"{min_repeat_buyers} to tell a buying rate from dropout")
    month_index, clock_failure = None, None
    if seasonal_index:
        before = orders.loc[on_or_before]
        try:
            month_index = MonthIndex().fit(before["customer_id"].to_numpy(), before["order_date"].to_numpy())
        except ValueError as error:  # calendar days still give a usable model
            clock_failure = str(error)
    t_x, T, horizon = purchase_clock(t_x_days, age_days, end, horizon_days, time_unit_days, month_index)

    fitted = fit_sample(len(x), fit_sample_size)
    purchase_model = BetaGeoModel(penalizer=penalizer, dropout_at_first_purchase=dropout_at_first_purchase)
    purchase_model.fit(x[fitted], t_x[fitted], T[fitted])
    p_alive = purchase_model.p_alive(x, t_x, T)
    expected_orders = purchase_model.expected_orders(horizon, x, t_x, T)

    non_positive = repeat & (m <= 0)
    positive = repeat & ~non_positive
    value_model, fallback_reason = _fit_value_model(x, m, positive & fitted, min_repeat_buyers, penalizer)
    if value_model is not None:
        population_mean = value_model.population_mean_
        order_value = value_model.expected_order_value(x, np.where(non_positive, 0.0, m))
    else:
        purchase_days = float((x + 1).sum())
        population_mean = max(float(orders.loc[on_or_before, "order_value"].sum()) / purchase_days, 0.0)
        order_value = np.full(x.size, population_mean)
    order_value = np.where(non_positive, 0.0, order_value)
    expected_revenue = expected_orders * order_value

    estimates = pd.DataFrame({
        "frequency": summary["frequency"].to_numpy(),
        "recency_days": t_x_days,
        "age_days": age_days,
        "monetary_value": m,
        "p_alive": p_alive,
        "expected_orders": expected_orders,
        "expected_order_value": order_value,
        "expected_revenue": expected_revenue,
    }, index=summary.index)
    numeric = estimates.drop(columns=["frequency", "recency_days", "age_days", "monetary_value"])
    bad = {column: int(n) for column, n in (~np.isfinite(numeric)).sum().items() if n}
    if bad:
        raise ValueError(f"non-finite estimates {bad} (customers per column); purchase-model parameters "
                         f"{purchase_model.params_}")
    estimates["churn_risk"] = assign_churn_risk(p_alive, (high_below, medium_below))

    history_days = int((end - orders.loc[on_or_before, "order_date"].min().normalize()).days) + 1
    report = _fit_report(
        end=end, horizon_days=horizon_days, time_unit_days=time_unit_days, thresholds=(high_below, medium_below),
        history_days=history_days, repeat=repeat, positive=positive, non_positive=non_positive,
        ignored=int((~on_or_before).sum()), purchase_model=purchase_model, value_model=value_model,
        fallback_reason=fallback_reason, population_mean=population_mean, estimates=estimates,
        dropout_at_first_purchase=dropout_at_first_purchase, month_index=month_index, horizon=float(horizon[0]),
        clock_failure=clock_failure)
    return CustomerValue(estimates=estimates, purchase_model=purchase_model, value_model=value_model,
                         report=report, month_index=month_index)


def fit_sample(n_customers: int, sample_size: int | None, seed: int = 0) -> np.ndarray:
    """Which customers (rows of the summary, sorted by id) the fits use: a boolean mask.

    Every customer when ``sample_size`` is None or not below ``n_customers``;
    otherwise ``sample_size`` of them drawn without replacement by
    ``default_rng(seed)``.
    """
    mask = np.ones(n_customers, dtype=bool)
    if sample_size is not None and sample_size < n_customers:
        mask[:] = False
        mask[np.random.default_rng(seed).choice(n_customers, size=sample_size, replace=False)] = True
    return mask


def _check_inputs(orders: pd.DataFrame, horizon_days: float, time_unit_days: float,
                  thresholds) -> tuple[float, float]:
    """Refuse what no fit can use; returns the checked ``(high_below, medium_below)`` thresholds."""
    missing = [c for c in ("customer_id", "order_date", "order_value") if c not in orders.columns]
    if missing:
        raise ValueError(f"orders lack column(s) {missing}; expected customer_id, order_date, order_value")
    if not horizon_days > 0:
        raise ValueError(f"horizon_days must be positive, got {horizon_days}")
    if not time_unit_days > 0:
        raise ValueError(f"time_unit_days must be positive, got {time_unit_days}")
    checked = _check_thresholds(thresholds)
    if orders.empty:
        raise ValueError("no orders: nothing to estimate")
    if not pd.api.types.is_datetime64_any_dtype(orders["order_date"]):
        raise ValueError(f"order_date must be datetime64, got {orders['order_date'].dtype}")
    if not np.isfinite(orders["order_value"].to_numpy(dtype=float)).all():
        raise ValueError("order_value contains NaN or infinite values")
    return checked


def _fit_value_model(x: np.ndarray, m: np.ndarray, positive: np.ndarray, min_repeat_buyers: int,
                     penalizer: float) -> tuple["GammaGammaModel | None", str | None]:
    """Gamma-Gamma on the repeat buyers of positive spend, or None and why (the population-mean fallback)."""
    if positive.sum() < min_repeat_buyers:
        return None, (f"{int(positive.sum())} repeat buyer(s) with positive spend, fewer than "
                      f"min_repeat_buyers={min_repeat_buyers}")
    try:
        return GammaGammaModel(penalizer=penalizer).fit(x[positive], m[positive]), None
    except ValueError as error:
        return None, f"Gamma-Gamma fit failed: {error}"


def _fit_report(*, end, horizon_days, time_unit_days, thresholds, history_days, repeat, positive, non_positive,
                ignored, purchase_model, value_model, fallback_reason, population_mean, estimates,
                dropout_at_first_purchase, month_index=None, horizon=None, clock_failure=None) -> dict:
    """The JSON-ready account of a fit: parameters, convergence, fallbacks, counts and notes.

    ``history_days`` counts calendar days with both ends included: 1997-01-01
    to 1997-09-30 is CDNOW's 273-day (39-week) calibration.
    """
    notes = []
    if history_days < horizon_days:
        notes.append(f"the history ({history_days} days) is shorter than the horizon ({horizon_days:g} days): "
                     f"the predictions extrapolate the fitted rates beyond any observed span")
    if repeat.mean() < LOW_REPEAT_SHARE:
        notes.append(f"only {repeat.mean():.1%} of the customers bought twice: the split between a low buying "
                     f"rate and dropout is poorly determined, so p_alive is uncertain (expected orders less so)")
    if fallback_reason:
        notes.append(f"order values: population mean for every customer ({fallback_reason})")
    if clock_failure:
        notes.append(f"purchase model on calendar days: {clock_failure}")
    return {
        "analysis_date": str(end.date()),
        "horizon_days": float(horizon_days),
        "time_unit_days": float(time_unit_days),
        "churn_thresholds": {"high_below": thresholds[0], "medium_below": thresholds[1]},
        "customers": int(repeat.size),
        "repeat_buyers": int(repeat.sum()),
        "orders_after_analysis_date_ignored": ignored,
        "history_days": history_days,
        "history_shorter_than_horizon": history_days < horizon_days,
        "seasonal_index": None if month_index is None else {
            "factors": dict(zip(MONTH_NAMES, month_index.factors_.round(6).tolist())),
            "in_between_purchase_days": month_index.in_between_days_, "converged": month_index.converged_,
            "horizon_seasonal_days": round(float(horizon) * time_unit_days, 4)},
        "purchase_model": {
            "model": "MBG/NBD" if dropout_at_first_purchase else "BG/NBD",
            "clock": "calendar days" if month_index is None else "seasonal days (month-of-year index)",
            "params": purchase_model.params_, "alpha_time_unit_days": float(time_unit_days),
            "converged": purchase_model.converged_, "iterations": purchase_model.n_iter_,
            "customers": purchase_model.n_customers_},
        "value_model": {
            "model": "Gamma-Gamma" if value_model is not None else "population mean",
            "fallback": value_model is None, "fallback_reason": fallback_reason,
            "params": value_model.params_ if value_model is not None else None,
            "converged": value_model.converged_ if value_model is not None else None,
            "customers": int(positive.sum()) if value_model is not None else 0,
            "population_mean_order_value": float(population_mean)},
        "non_positive_spend": {
            "customers": int(non_positive.sum()), "excluded_from_value_fit": True,
            "expected_order_value": 0.0},
        "churn_risk_counts": {level: int(n) for level, n in
                              estimates["churn_risk"].value_counts(sort=False).items()},
        "notes": notes,
    }
