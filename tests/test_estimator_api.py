"""scikit-learn's own API checks on every clustering estimator (STYLE: the estimator contract).

They cover what a caller relies on: parameters untouched by ``fit``, clear
errors on NaN, sparse, empty or wrongly shaped input, ``n_features_in_``
checked at prediction, results independent of row order, pickling. The two
transformers are left out on purpose: ``ModelMatrixTransformer`` selects
named DataFrame columns, and ``AutoencoderTransformer`` trains a network, so
both are tested directly (tests/test_features.py, tests/test_autoencoder.py).
"""

from __future__ import annotations

import warnings

from sklearn.utils.estimator_checks import parametrize_with_checks

from core.cluster.clustering import FuzzyCMeansClusterer, GaussianMixtureClusterer, HDBSCANClusterer, KMeansClusterer


@parametrize_with_checks([
    KMeansClusterer(n_clusters=(2, 3)),
    GaussianMixtureClusterer(n_components=(2, 3)),
    FuzzyCMeansClusterer(n_clusters=(2, 3)),
    HDBSCANClusterer(min_cluster_size_fraction=0.1, min_samples=3),
])
def test_sklearn_estimator_contract(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on the checks' tiny data sets
        check(estimator)
