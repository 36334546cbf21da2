"""Stage 02's two estimators: the class-mix embedding and the model-matrix transformer.

Both follow scikit-learn's estimator contract (tests/test_estimator_api.py
runs its checks on them): ``__init__`` stores hyper-parameters only,
``fit`` learns attributes ending in ``_`` and returns ``self``, ``transform``
checks that the estimator is fitted and that it gets the features it was
fitted on. Neither holds the other: stage 02 fits the embedding on the
eligible customers' class spend, adds its columns to the features
(:func:`add_class_mix`), then fits the model matrix on the features; the
fitted pair is saved together (:class:`core.prepare_features.prepare.FeatureModel`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import TruncatedSVD
from sklearn.preprocessing import RobustScaler, StandardScaler
from sklearn.utils.validation import check_is_fitted, check_non_negative, validate_data

from core.domain.columns import ID_COLUMN
from core.prepare_features.columns import class_mix_column

SCALERS = {"standard": StandardScaler, "robust": RobustScaler}


def _checked_input_features(estimator, input_features) -> list[str] | None:
    """``input_features`` of ``get_feature_names_out``, checked against what ``fit`` saw (None when not given)."""
    if input_features is None:
        return None
    names = [str(n) for n in input_features]
    seen = getattr(estimator, "feature_names_in_", None)
    if seen is not None and names != [str(n) for n in seen]:
        raise ValueError("input_features is not equal to feature_names_in_")
    if len(names) != estimator.n_features_in_:
        raise ValueError(f"input_features should have length equal to number of features "
                         f"({estimator.n_features_in_}), got {len(names)}")
    return names


# ---------------------------------------------------------------------------
# The model matrix


class ModelMatrixTransformer(TransformerMixin, BaseEstimator):
    """Select feature columns, log1p the skewed ones, square-root the shares, scale them.

    Parameters
    ----------
    columns : sequence of str or None
        Feature columns of the model matrix, in order; ``X`` must then be a
        DataFrame holding them (other columns are ignored, like
        ``ColumnTransformer`` does). None: every column of ``X``, in order
        (named ``x0``, ``x1``, ... when ``X`` has no column names).
    log1p_columns : sequence of str
        Subset of the columns transformed with ``log1p`` (after clipping
        below at 0) before scaling.
    sqrt_columns : sequence of str
        Subset of the columns replaced by their square root (after clipping
        below at 0) before scaling: shares of a whole (a department mix).
        The square root is the Hellinger geometry of compositions, and it
        evens out the sampling noise of a share (about ``p (1 - p) / n`` on
        the share, about ``1 / (4 n)`` on its root), so a department a
        persona buys much of no longer spreads its customers far more than
        one it buys little of. Disjoint from ``log1p_columns``.
    scaler : {"standard", "robust"}
        ``standard``: mean 0, standard deviation 1. ``robust``: median 0,
        interquartile range 1, which blows up a share that most customers
        leave at 0 (docs/decisions.md).

    Attributes
    ----------
    scaler_ : StandardScaler or RobustScaler
        Fitted on the transformed columns.
    n_features_in_ : int
        Columns read from ``X``.
    feature_names_in_ : ndarray of str
        Their names, when ``X`` has string column names.
    """

    def __init__(self, columns=None, log1p_columns=(), scaler="standard", sqrt_columns=()):
        self.columns = columns
        self.log1p_columns = log1p_columns
        self.scaler = scaler
        self.sqrt_columns = sqrt_columns

    def fit(self, X, y=None) -> "ModelMatrixTransformer":
        """Fit the scaler on ``X``'s selected, transformed columns.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_customers, n_features)
        y : ignored

        Returns
        -------
        self
        """
        if self.scaler not in SCALERS:
            raise ValueError(f"scaler {self.scaler!r} is not one of {', '.join(SCALERS)}")
        values = self._values(X, reset=True)
        for kind, listed in (("log1p", self.log1p_columns), ("sqrt", self.sqrt_columns)):
            unknown = set(listed) - set(self._names())
            if unknown:
                raise ValueError(f"{kind} columns not among the model columns: {', '.join(sorted(unknown))}")
        both = set(self.log1p_columns) & set(self.sqrt_columns)
        if both:
            raise ValueError(f"columns both log1p and sqrt: {', '.join(sorted(both))}")
        self.scaler_ = SCALERS[self.scaler]().fit(self._log1p(values))
        return self

    def transform(self, X) -> np.ndarray:
        """The scaled model matrix.

        Parameters
        ----------
        X : DataFrame or array-like
            With the columns seen in ``fit``.

        Returns
        -------
        ndarray of shape (n_customers, n_features_in_)
        """
        check_is_fitted(self, "scaler_")
        return self.scaler_.transform(self._log1p(self._values(X, reset=False)))

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """The model-matrix column names, in order."""
        check_is_fitted(self, "scaler_")
        given = _checked_input_features(self, input_features)
        return np.asarray(given if given is not None and self.columns is None else self._names(), dtype=object)

    def _names(self) -> list[str]:
        """The columns read from ``X``, in order (once fitted, for ``columns=None``)."""
        if self.columns is not None:
            return list(self.columns)
        if hasattr(self, "feature_names_in_"):
            return list(self.feature_names_in_)
        return [f"x{i}" for i in range(self.n_features_in_)]

    def _values(self, X, reset: bool) -> np.ndarray:
        """The columns read from ``X`` as a new float64 array, validated (finite, the features of ``fit``)."""
        if self.columns is None:
            return validate_data(self, X, dtype=np.float64, copy=True, reset=reset)
        if not isinstance(X, pd.DataFrame):
            raise ValueError(f"{type(self).__name__} with named columns needs a DataFrame holding them, got "
                             f"{type(X).__name__}")
        missing = [c for c in self.columns if c not in X.columns]
        if missing:
            raise ValueError(f"feature columns missing from the input: {', '.join(missing)}")
        return validate_data(self, X[list(self.columns)], dtype=np.float64, copy=True, reset=reset)

    def _log1p(self, values: np.ndarray) -> np.ndarray:
        """``values`` (owned here) with the log1p and square-root columns transformed in place."""
        logged = set(self.log1p_columns)
        # A model pickled before sqrt_columns existed has no such attribute: it square-rooted nothing.
        rooted = set(getattr(self, "sqrt_columns", ()))
        for i, name in enumerate(self._names()):
            if name in logged:
                values[:, i] = np.log1p(np.clip(values[:, i], 0.0, None))
            elif name in rooted:
                values[:, i] = np.sqrt(np.clip(values[:, i], 0.0, None))
        return values


# ---------------------------------------------------------------------------
# What customers buy within departments


def class_spend_matrix(class_long: pd.DataFrame, customer_ids: np.ndarray, n_classes: int) -> sparse.csr_matrix:
    """Customers x sellable classes of net spend (sparse, negatives as 0), rows in ``customer_ids`` order.

    Parameters
    ----------
    class_long : DataFrame
        :attr:`~core.prepare_features.aggregate.CustomerFeatures.class_long`
        (its ``customer_id``, ``class_idx`` and ``spend``); class rows of
        customers not in ``customer_ids`` are ignored.
    customer_ids : ndarray
        Sorted.
    n_classes : int

    Returns
    -------
    csr_matrix of shape (len(customer_ids), n_classes)
    """
    if len(customer_ids) == 0:
        return sparse.csr_matrix((0, n_classes))
    ids = class_long[ID_COLUMN].to_numpy()
    rows = np.searchsorted(customer_ids, ids)
    found = (rows < len(customer_ids)) & (customer_ids[np.minimum(rows, len(customer_ids) - 1)] == ids)
    spend = np.clip(class_long["spend"].to_numpy(np.float64), 0.0, None)
    return sparse.csr_matrix((spend[found], (rows[found], class_long["class_idx"].to_numpy(np.int64)[found])),
                             shape=(len(customer_ids), n_classes))


class ClassMixEmbedding(TransformerMixin, BaseEstimator):
    """Each customer's mix of classes in a few dense columns.

    The square root of each class's share of the customer's spend (the
    Hellinger transform), projected on its leading singular vectors.
    Personas and real shoppers differ in *which* classes they buy within a
    department (school uniform or baby wear within kids' clothing); the
    department shares cannot show that, and hundreds of sparse class columns
    are too many to cluster. The square root keeps one large class from
    drowning the rest, and customers with little spend are not magnified
    (their row has length at most 1, like everyone's).

    Parameters
    ----------
    n_components : int
        Columns kept (capped at the number of classes minus one and of
        fitted customers minus one).
    max_fit_rows : int
        The singular vectors are fitted on at most this many customers (a
        seeded sample); every customer is transformed.
    random_state : int or None

    Attributes
    ----------
    components_ : ndarray of shape (n_components_, n_classes)
        Each with its largest loading positive.
    explained_variance_ratio_ : ndarray of shape (n_components_,)
    n_features_in_ : int
        Classes.
    """

    def __init__(self, n_components=12, max_fit_rows=200_000, random_state=0):
        self.n_components = n_components
        self.max_fit_rows = max_fit_rows
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.positive_only = True  # spend; returns are clipped at 0 before
        return tags

    def fit(self, X, y=None) -> "ClassMixEmbedding":
        """Fit the singular vectors on the Hellinger-transformed spend.

        Parameters
        ----------
        X : sparse matrix or array-like of shape (n_customers, n_classes)
            Non-negative class spend (:func:`class_spend_matrix`); at least 2
            customers and 2 classes.
        y : ignored

        Returns
        -------
        self
        """
        X = validate_data(self, X, accept_sparse="csr", dtype=np.float64, ensure_min_samples=2,
                          ensure_min_features=2)
        shares = self._hellinger(X)
        n_rows, n_classes = shares.shape
        n = min(int(self.n_components), n_classes - 1, n_rows - 1)
        if n < 1:
            raise ValueError(f"n_components must be at least 1, got {self.n_components}")
        if n_rows > self.max_fit_rows:
            rng = np.random.default_rng(self.random_state)
            shares = shares[np.sort(rng.choice(n_rows, self.max_fit_rows, replace=False))]
        svd = TruncatedSVD(n_components=n, algorithm="randomized", n_iter=7, random_state=self.random_state)
        svd.fit(shares)
        components = svd.components_
        # A singular vector's sign is arbitrary: fix it (largest loading positive) so the columns read
        # the same way whatever the solver's path.
        signs = np.sign(components[np.arange(n), np.abs(components).argmax(axis=1)])
        self.components_ = components * signs[:, None]
        self.explained_variance_ratio_ = svd.explained_variance_ratio_
        return self

    def transform(self, X) -> np.ndarray:
        """The class-mix columns.

        Parameters
        ----------
        X : sparse matrix or array-like of shape (n_customers, n_features_in_)

        Returns
        -------
        ndarray of shape (n_customers, n_components_)
        """
        check_is_fitted(self, "components_")
        X = validate_data(self, X, accept_sparse="csr", dtype=np.float64, reset=False)
        return np.asarray(self._hellinger(X) @ self.components_.T)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """``class_mix_01``, ``class_mix_02``, ..."""
        check_is_fitted(self, "components_")
        _checked_input_features(self, input_features)
        return np.asarray([class_mix_column(i + 1) for i in range(len(self.components_))], dtype=object)

    @staticmethod
    def _hellinger(X) -> sparse.csr_matrix:
        """Square roots of each row's shares of its total (rows without spend stay 0)."""
        X = sparse.csr_matrix(X, dtype=np.float64)
        check_non_negative(X, "ClassMixEmbedding (class spend: clip returns at 0 first)")
        totals = np.asarray(X.sum(axis=1)).ravel()
        totals[totals == 0] = 1.0
        return (sparse.diags(1.0 / totals) @ X).sqrt()


def add_class_mix(features: pd.DataFrame, class_long: pd.DataFrame, embedding: ClassMixEmbedding) -> pd.DataFrame:
    """``features`` with the embedding's ``class_mix_*`` columns (replaced if present) computed from ``class_long``.

    Parameters
    ----------
    features : DataFrame
        Sorted by ``customer_id``.
    class_long : DataFrame
        Their class totals (:func:`class_spend_matrix`).
    embedding : ClassMixEmbedding
        Fitted.

    Returns
    -------
    DataFrame
        A new frame; ``features`` is not changed.
    """
    matrix = class_spend_matrix(class_long, features[ID_COLUMN].to_numpy(), embedding.n_features_in_)
    mix = pd.DataFrame(embedding.transform(matrix), columns=embedding.get_feature_names_out(), index=features.index)
    return pd.concat([features.drop(columns=[c for c in mix.columns if c in features.columns]), mix], axis=1)


def class_mix_names(embedding: ClassMixEmbedding | None) -> list[str]:
    """The columns ``embedding`` adds (none for None)."""
    return [] if embedding is None else list(embedding.get_feature_names_out())
