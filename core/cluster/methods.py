"""Every clustering method stage 04 can fit, by name: the estimators of :mod:`core.cluster.clustering` and the ones
built on them in modules of their own (:mod:`core.cluster.sharpened`), which ``clustering`` cannot import without a
cycle."""

from __future__ import annotations

from core.cluster import clustering
from core.cluster.sharpened import SharpenedKMeansClusterer


def make_clusterer(method: str, cluster_cfg, seed: int, space: str | None = None) -> clustering._Segmenter:
    """The estimator for ``method`` with its hyper-parameters from the ``cluster`` config section.

    ``sharpkmeans`` is built here; every other method by :func:`core.cluster.clustering.make_clusterer`.
    """
    if method == "sharpkmeans":
        c = cluster_cfg.sharpkmeans
        return SharpenedKMeansClusterer(n_clusters=c.n_clusters, n_init=c.n_init, steps=c.steps,
                                        neighbours_fraction=c.neighbours_fraction,
                                        silhouette_sample_size=cluster_cfg.silhouette_sample_size,
                                        selection_sample_size=cluster_cfg.selection_sample_size, random_state=seed)
    return clustering.make_clusterer(method, cluster_cfg, seed, space)
