"""Buy-till-you-die customer-value models: BG/NBD, Gamma-Gamma and the RFM summary they read.

``rfm_summary`` turns an order table into one row per customer (frequency,
recency, age ``T``, mean repeat-order value) following the conventions of the
``lifetimes`` package, so that published fits can be reproduced.
``BetaGeoModel`` (BG/NBD) predicts how many orders a customer will place and
whether they are still active; ``GammaGammaModel`` predicts the value of their
orders. Both are scikit-learn-style estimators: hyper-parameters in
``__init__``, fitted state in attributes ending in ``_``.

References
----------
Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005a). "Counting your
customers" the easy way: an alternative to the Pareto/NBD model. *Marketing
Science* 24(2), 275-284.

Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005b). RFM and CLV: using
iso-value curves for customer base analysis. *Journal of Marketing Research*
42(4), 415-430.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit, gammaln, hyp2f1
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

__all__ = ["BetaGeoModel", "GammaGammaModel", "rfm_summary"]


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
    if (x < 0).any() or (t_x < 0).any() or (T <= 0).any():
        raise ValueError("frequency and recency must be >= 0 and T > 0")
    if (t_x > T).any():
        raise ValueError(f"recency exceeds T for {int((t_x > T).sum())} customer(s)")
    return [x, t_x, T]


def _fit_log_params(objective, n_params: int, args: tuple, name: str) -> tuple[np.ndarray, bool]:
    """Minimise ``objective`` over log-parameters (keeps them positive without bounds).

    Returns the parameters and whether the optimiser reported success. A
    failed optimisation whose parameters are still finite only warns, since
    its estimate is often usable; non-finite parameters raise ``ValueError``.
    """
    result = minimize(objective, np.zeros(n_params), args=args, method="L-BFGS-B")
    params = np.exp(result.x)
    if not np.isfinite(params).all() or not np.isfinite(result.fun):
        raise ValueError(f"{name} fit failed: non-finite parameters {params} or likelihood ({result.message})")
    if not result.success:
        warnings.warn(f"{name} fit did not converge: {result.message}", ConvergenceWarning, stacklevel=3)
    return params, bool(result.success)


def _bgnbd_negative_log_likelihood(log_params, x, t_x, T, weights, penalizer) -> float:
    """Weighted mean negative BG/NBD log-likelihood (Fader, Hardie & Lee 2005a, eq. 6)."""
    r, alpha, a, b = params = np.exp(log_params)
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + T)
    # The second term only exists for repeat buyers; -inf drops it inside logaddexp.
    a4 = np.where(x > 0, np.log(a) - np.log(b + np.maximum(x, 1) - 1) - (r + x) * np.log(alpha + t_x), -np.inf)
    log_likelihood = a1 + a2 + np.logaddexp(a3, a4)
    return -(weights @ log_likelihood) / weights.sum() + penalizer * (params @ params)


class BetaGeoModel(BaseEstimator):
    """BG/NBD model of repeat purchases (Fader, Hardie & Lee 2005a).

    While active, a customer buys at Poisson rate ``lambda ~ Gamma(r, alpha)``;
    after each purchase they drop out with probability ``p ~ Beta(a, b)``.

    Parameters
    ----------
    penalizer : float, default 0.0
        L2 penalty on the four parameters, added to the mean negative
        log-likelihood (the ``penalizer_coef`` of ``lifetimes``); shrinks
        them on small or degenerate data.

    Attributes
    ----------
    params_ : dict
        Fitted ``r``, ``alpha`` (in the time unit of the inputs), ``a``, ``b``.
    converged_ : bool
        Whether the optimiser reported convergence. ``False`` comes with a
        ``ConvergenceWarning``; the parameters are then finite but may be
        imprecise. A fit ending on non-finite parameters raises ``ValueError``.
    n_customers_ : int
        Number of customers the model was fitted on.
    """

    def __init__(self, penalizer: float = 0.0):
        self.penalizer = penalizer

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
        args = (*rows.T, weights.astype(float), self.penalizer)
        params, self.converged_ = _fit_log_params(_bgnbd_negative_log_likelihood, 4, args, "BG/NBD")
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
            One probability per customer; exactly 1 when ``frequency`` is 0,
            because BG/NBD customers can only drop out right after a purchase.
        """
        check_is_fitted(self, "params_")
        x, t_x, T = _check_bgnbd_inputs(frequency, recency, T)
        r, alpha, a, b = self.params_.values()
        # 1 / (1 + odds of having dropped out), with the odds kept in logs: (alpha+T)^(r+x) overflows.
        log_odds = np.log(a) - np.log(b + np.maximum(x, 1) - 1) + (r + x) * np.log((alpha + T) / (alpha + t_x))
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
            Expected purchases per customer (Fader, Hardie & Lee 2005a, eq. 10).
        """
        check_is_fitted(self, "params_")
        x, t_x, T = _check_bgnbd_inputs(frequency, recency, T)
        t = np.asarray(t, dtype=float)
        r, alpha, a, b = self.params_.values()
        big_a, big_b, big_c, z = r + x, b + x, a + b + x - 1, t / (alpha + T + t)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            log_hyp = np.log(hyp2f1(big_a, big_b, big_c, z))
            # Euler's transformation gives the same value where the direct series overflows.
            euler = np.log(hyp2f1(big_c - big_a, big_c - big_b, big_c, z)) + (big_c - big_a - big_b) * np.log1p(-z)
        log_hyp = np.where(np.isfinite(log_hyp), log_hyp, euler)
        # a < 1 makes both factors negative; their product stays positive (a == 1 is a removable singularity).
        numerator = (a + b + x - 1) / (a - 1) * -np.expm1(log_hyp + (r + x) * np.log((alpha + T) / (alpha + T + t)))
        return numerator * self.p_alive(x, t_x, T)


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
        params, self.converged_ = _fit_log_params(
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
