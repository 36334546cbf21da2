"""The latent layer's size from the data, without labels and without training (``latent_dim: 0``).

The rule is Horn's parallel analysis on the model matrix's covariance: a
principal direction carries structure when its variance is larger than the
variance the same rank takes in data with the same columns shuffled
independently (same per-column spread, no relation between columns), in at
least ``quantile`` of ``n_permutations`` shuffles. The count of leading
directions that do, ``components_above_chance_``, is how many dimensions of
the features are more than noise; the autoencoder's MSE sees the same
covariance (the features are scaled in stage 02 and not rescaled here), so
the directions it can rebuild better than chance are those.

The latent size is that count, clipped to ``[min_dim, max_dim]`` (the
bottleneck below the narrowest hidden layer and below the inputs). It costs
a few eigen-decompositions of a features-by-features matrix on a sample, a
fraction of a second, so stage 03 still trains one network.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from threadpoolctl import threadpool_limits


@dataclasses.dataclass(frozen=True)
class LatentSizeChoice:
    """The chosen size and the spectrum behind it (stage 03 writes it in its manifest's details)."""

    latent_dim: int
    components_above_chance: int
    eigenvalues: tuple[float, ...]
    chance_eigenvalues: tuple[float, ...]
    rows_used: int

    def report(self) -> dict:
        """A JSON-friendly summary: the size, the count before clipping, the leading spectrum."""
        shown = max(self.components_above_chance, self.latent_dim) + 2
        return {"rule": "parallel analysis (covariance eigenvalues above shuffled columns')",
                "latent_dim": self.latent_dim, "components_above_chance": self.components_above_chance,
                "rows_used": self.rows_used,
                "eigenvalues": [round(v, 4) for v in self.eigenvalues[:shown]],
                "chance_eigenvalues": [round(v, 4) for v in self.chance_eigenvalues[:shown]]}


def choose_latent_dim(X: np.ndarray, *, max_dim: int, min_dim: int = 2, n_permutations: int = 20,
                      quantile: float = 0.95, sample_size: int = 5000, random_state: int = 0) -> LatentSizeChoice:
    """The number of principal directions of ``X`` with more variance than shuffled data, clipped.

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_features)
        The scaled model matrix (finite values).
    max_dim, min_dim : int
        Bounds of the result; ``max_dim`` wins when ``min_dim`` is above it.
    n_permutations : int
        Shuffles of the columns giving the chance spectrum.
    quantile : float
        A direction counts when its eigenvalue exceeds this quantile of the
        same rank's eigenvalues over the shuffles.
    sample_size : int
        At most this many rows (a seeded sample) are used.
    random_state : int

    Returns
    -------
    LatentSizeChoice
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 3 or X.shape[1] < 1:
        raise ValueError(f"choose_latent_dim needs a 2-d matrix with at least 3 rows, got shape {X.shape}")
    if max_dim < 1:
        raise ValueError(f"max_dim must be at least 1, got {max_dim}")
    rng = np.random.default_rng(random_state)
    if len(X) > sample_size:
        X = X[np.sort(rng.choice(len(X), size=sample_size, replace=False))]
    X = X - X.mean(axis=0)
    # One BLAS thread: these products are tiny, and on a busy machine BLAS's thread pool made the choice 30 times
    # slower (4 to 7 s against 0.2 s for 21 spectra of 5,000 x 45, measured with other jobs on both cores).
    with threadpool_limits(limits=1):
        eigenvalues = _spectrum(X)
        chance = np.quantile([_spectrum(_shuffle_columns(X, rng)) for _ in range(n_permutations)], quantile, axis=0)
    above = eigenvalues > chance
    # Only the leading run counts: a later direction above chance after one below it is noise's luck.
    count = int(np.argmin(above)) if not above.all() else len(above)
    size = int(min(max(count, min_dim), max_dim))
    return LatentSizeChoice(latent_dim=size, components_above_chance=count,
                            eigenvalues=tuple(float(v) for v in eigenvalues),
                            chance_eigenvalues=tuple(float(v) for v in chance), rows_used=len(X))


def _spectrum(X: np.ndarray) -> np.ndarray:
    """Covariance eigenvalues of centred ``X``, largest first."""
    return np.linalg.eigvalsh(X.T @ X / max(len(X) - 1, 1))[::-1]


def _shuffle_columns(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each column permuted on its own: the same values per column, no relation between columns."""
    return np.take_along_axis(X, np.argsort(rng.random(X.shape), axis=0), axis=0)
