"""k-means on sharpened data: each customer moved towards its nearest neighbours before the segments are cut.

On persona sets whose mixes overlap strongly, every customer's shares are
noisy estimates (a few dozen order lines) around a persona's mix, and the
personas' mixes differ by less than that noise: k-means on the model matrix
cuts through a continuum, its boundaries move with every refit (stability
0.67 to 0.75 on the overlapping tuning sets) and it stays far from the
persona (0.69 of the supervised reference). Data sharpening (Choi and Hall
1999; the flat-kernel mean-shift step of Fukunaga and Hostetler 1975, the
map stage 04 already uses before HDBSCAN in the latent space,
:class:`core.cluster.clustering.Sharpener`) replaces each customer by the
mean of their nearest neighbours among a reference sample, a few times:
the customers of one kind move towards their common centre, the noise of
each customer's own shares averages out, and the groups separate. k-means
then cuts the sharpened customers, its number of segments chosen by
silhouette on them as stage 04's k-means does. No label is used.

New customers (scoring, snapshots, the segment service) are sharpened by
the same map (their neighbours among the fitted reference points, step by
step) and given the nearest centre. The soft assignment
(:meth:`SharpenedKMeansClusterer.predict_proba`) is the posterior of the
Gaussian mixture k-means is the hard limit of: the fitted centres, equal
weights and one spherical variance (the segments' pooled within-segment
variance on the sharpened fitted rows), so its argmax is the nearest centre.

Figures (tuning persona sets only): docs/decisions.md, "Persona sets nobody
tuned for, sixth round".
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from core.cluster.clustering import KMeansClusterer, Sharpener, _fit_input, _predict_input, _Segmenter, sample_rows


class SharpenedKMeansClusterer(_Segmenter):
    """k-means, k by silhouette, on the customers sharpened by their nearest neighbours.

    Parameters
    ----------
    n_clusters : (int, int)
        Candidate range, inclusive (lowered on small data as for k-means).
    n_init : int
        k-means starts per candidate.
    steps : int
        Sharpening steps (each moves every customer to the mean of its
        neighbours among the reference points as they were after the step
        before); 0 is plain k-means.
    neighbours_fraction : float
        Neighbours averaged per step, as a share of the reference points (at least 2).
    silhouette_sample_size : int
    selection_sample_size : int
        The reference points are a seeded sample of this many fitted rows,
        and the number of clusters is chosen on the same sample.
    random_state : int

    Attributes
    ----------
    sharpener_ : Sharpener or None
        The fitted map (None with ``steps`` 0).
    model_ : KMeansClusterer
        k-means fitted on the sharpened rows.
    variance_ : float
        Pooled within-segment variance per dimension on the sharpened fitted
        rows (the soft assignment's spherical variance).
    """

    def __init__(self, n_clusters=(2, 8), n_init=10, steps=3, neighbours_fraction=0.02, silhouette_sample_size=3000,
                 selection_sample_size=5000, random_state=0):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.steps = steps
        self.neighbours_fraction = neighbours_fraction
        self.silhouette_sample_size = silhouette_sample_size
        self.selection_sample_size = selection_sample_size
        self.random_state = random_state

    def fit(self, X, y=None) -> "SharpenedKMeansClusterer":
        """Sharpen ``X``, choose k by silhouette on a sample of it, fit k-means; sets ``labels_``, ``strength_``."""
        if int(self.steps) < 0 or not 0 < float(self.neighbours_fraction) <= 1:
            raise ValueError(f"steps must be at least 0 and neighbours_fraction in (0, 1], got {self.steps!r} and "
                             f"{self.neighbours_fraction!r}")
        X = _fit_input(self, X)
        self.n_rows_fitted_ = len(X)
        reference = sample_rows(len(X), self.selection_sample_size, self.random_state)
        self.sharpener_ = (Sharpener(X, self.neighbours_fraction, int(self.steps), reference)
                           if int(self.steps) > 0 else None)
        sharpened = X if self.sharpener_ is None else self.sharpener_.fitted_
        if self.sharpener_ is not None:
            self.sharpener_.fitted_ = None  # the fitted rows' map: not part of the model (kept out of the pickle)
        self._sharpened_rows = sharpened  # the fitted rows' own map, for _finish_fit's assignment only
        self.model_ = KMeansClusterer(n_clusters=self.n_clusters, n_init=self.n_init,
                                      silhouette_sample_size=self.silhouette_sample_size,
                                      selection_sample_size=self.selection_sample_size,
                                      random_state=self.random_state).fit(sharpened)
        centres = self.model_.model_.cluster_centers_
        within = sharpened - centres[self.model_.labels_]
        self.variance_ = max(float(np.mean(within ** 2)), 1e-12)
        try:
            self._finish_fit(X, self.model_.n_clusters_)
        finally:
            self._sharpened_rows = None
        return self

    def _sharpen(self, X: np.ndarray) -> np.ndarray:
        # While fit assigns its own rows, their map is already known: mapping them again doubled the cost of
        # every fit and stability refit (1.5 of 5.5 CPU-s on the default data's raw space).
        if getattr(self, "_sharpened_rows", None) is not None:
            return self._sharpened_rows
        return X if self.sharpener_ is None else self.sharpener_.transform(X)

    def _posterior(self, sharpened: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Squared distances to the centres and the equal-weight spherical mixture's posterior."""
        squared = self.model_.model_.transform(sharpened) ** 2
        logits = -(squared - squared.min(axis=1, keepdims=True)) / (2.0 * self.variance_)
        proba = np.exp(logits)
        return squared, proba / proba.sum(axis=1, keepdims=True)

    def _assign_internal(self, X: np.ndarray, membership: bool):
        # As k-means: strength 1 - d1/d2 on the sharpened customer, no membership table. The mixture's posterior
        # (predict_proba) is near 0 or 1 for almost everyone once the customers are sharpened, so it would say
        # little as a strength.
        return self.model_._assign_internal(self._sharpen(X), membership)

    def predict_proba(self, X) -> np.ndarray:
        """Soft assignment of each row, shape (n_samples, n_clusters), columns in ``cluster_ids_`` order."""
        check_is_fitted(self, "model_")
        return self._posterior(self._sharpen(_predict_input(self, X)))[1]

    def fixed_params(self) -> dict[str, Any]:
        """The chosen k, so a refit (stability) sharpens again but does not choose again."""
        return {"n_clusters": (self.n_clusters_, self.n_clusters_)}

    def selection_report(self) -> dict[str, Any]:
        """k-means' choice on the sharpened sample, and the sharpening used."""
        return {**self.model_.selection_report(), "sharpen_steps": int(self.steps),
                "sharpen_neighbours": self.sharpener_.neighbours if self.sharpener_ is not None else 0}
