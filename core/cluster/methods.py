"""Every clustering method stage 04 can fit, by name: the estimators of :mod:`core.cluster.clustering` and the ones
built on them in modules of their own (:mod:`core.cluster.sharpened`), which ``clustering`` cannot import without a
cycle."""

from __future__ import annotations

from core.cluster import clustering
from core.cluster.count_mixture import CountMixtureClusterer
from core.cluster.sharpened import SharpenedKMeansClusterer


def make_clusterer(method: str, cluster_cfg, seed: int, space: str | None = None,
                   columns=None) -> clustering._Segmenter:
    """The estimator for ``method`` with its hyper-parameters from the ``cluster`` config section.

    ``sharpkmeans`` and ``countmix`` are built here; every other method by
    :func:`core.cluster.clustering.make_clusterer`. ``countmix`` needs ``columns``: the counts space's column names
    (:func:`core.cluster.count_mixture.count_columns`), from which it reads each class's department.
    """
    if method == "countmix":
        c = cluster_cfg.countmix
        return CountMixtureClusterer(n_components=c.n_components, columns=tuple(columns or ()), start="ward",
                                     max_iter=c.max_iter, tol=c.tol, scan_tol=c.scan_tol, scan_step=c.scan_step,
                                     selection_sample_size=cluster_cfg.selection_sample_size,
                                     ward_sample_size=c.ward_sample_size, ward_restarts=c.ward_restarts,
                                     restart_fraction=c.restart_fraction, random_state=seed)
    if method == "sharpkmeans":
        c = cluster_cfg.sharpkmeans
        return SharpenedKMeansClusterer(n_clusters=c.n_clusters, n_init=c.n_init, steps=c.steps,
                                        neighbours_fraction=c.neighbours_fraction,
                                        silhouette_sample_size=cluster_cfg.silhouette_sample_size,
                                        selection_sample_size=cluster_cfg.selection_sample_size, random_state=seed)
    return clustering.make_clusterer(method, cluster_cfg, seed, space)
