"""Tests of AutoencoderTransformer (core/train_autoencoder/autoencoder.py): determinism, shapes, the
estimator contract (global state, feature count, clone) and the save/load round trip."""

from __future__ import annotations

import random

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from core.train_autoencoder.autoencoder import LATENT_LAYER, AutoencoderTransformer, explained_share

N_ROWS, N_FEATURES, LATENT = 300, 10, 3
PARAMS = dict(hidden_units=(8,), latent_dim=LATENT, epochs=5, batch_size=64, validation_split=0.2,
              early_stopping_patience=3, learning_rate=1e-2, random_state=7)


def matrix(seed: int = 0) -> np.ndarray:
    """Correlated columns, so there is something for the network to compress."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(N_ROWS, 3))
    mixing = rng.normal(size=(3, N_FEATURES))
    return (base @ mixing + 0.1 * rng.normal(size=(N_ROWS, N_FEATURES))).astype(np.float32)


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    return matrix()


@pytest.fixture(scope="module")
def trained(X):
    model = AutoencoderTransformer(**PARAMS).fit(X)
    return model, model.transform(X)


def test_transform_before_fit_raises(X):
    model = AutoencoderTransformer(**PARAMS)
    with pytest.raises(NotFittedError, match="not fitted"):
        model.transform(X)
    with pytest.raises(NotFittedError, match="not fitted"):
        model.reconstruction_error(X)


def test_transform_shape_and_history(trained, X):
    model, latent = trained
    assert latent.shape == (N_ROWS, LATENT)
    assert np.isfinite(latent).all()
    assert model.n_features_in_ == N_FEATURES
    assert len(model.history_["loss"]) in range(1, PARAMS["epochs"] + 1)
    assert len(model.history_["val_loss"]) == len(model.history_["loss"])


def test_same_random_state_gives_identical_latent_values(trained, X):
    _, first = trained
    second = AutoencoderTransformer(**PARAMS).fit(X).transform(X)
    np.testing.assert_allclose(second, first, atol=1e-6)


def test_a_different_random_state_gives_different_latent_values(trained, X):
    _, first = trained
    other = AutoencoderTransformer(**{**PARAMS, "random_state": 8}).fit(X).transform(X)
    assert np.max(np.abs(other - first)) > 1e-3


def test_reconstruction_error_per_row(trained, X):
    model, _ = trained
    error = model.reconstruction_error(X)
    assert error.shape == (N_ROWS,)
    assert np.all(error >= 0)
    # A wildly unusual row reconstructs worse than the rows the network was trained on.
    outlier = np.full((1, N_FEATURES), 50.0, dtype=np.float32)
    assert model.reconstruction_error(outlier)[0] > np.median(error)


def test_explained_share_compares_the_reconstruction_with_the_column_means():
    # Worked by hand: errors 0, 0, 0, 1 -> loss 0.25; every value 1 from its column mean -> 1; share 0.75.
    X = np.array([[1.0, 2.0], [3.0, 4.0]])
    found = explained_share(X, np.array([[1.0, 2.0], [3.0, 3.0]]), np.array([2.0, 3.0]), on="held-out rows")
    assert found == {"share": 0.75, "loss": 0.25, "mean_loss": 1.0, "rows": 2, "on": "held-out rows"}
    assert explained_share(X, np.array([[2.0, 3.0], [2.0, 3.0]]), np.array([2.0, 3.0]), on="x")["share"] == 0.0
    assert explained_share(np.ones((3, 2)), np.zeros((3, 2)), np.ones(2), on="x")["share"] == 0.0  # nothing to explain


def test_a_trained_network_explains_the_held_out_rows_and_an_untrained_one_does_not(trained, X):
    """explained_ is measured on the held-out rows with the restored weights: the fixture's 5 epochs at lr 0.01
    explain a third of these 3-factor columns (0.33 measured); one step at lr 1e-7 leaves the random start,
    which reconstructs worse than the column means (-0.25 measured)."""
    model, _ = trained
    assert model.explained_["on"] == "held-out rows" and model.explained_["rows"] == round(0.2 * N_ROWS)
    assert model.explained_["share"] > 0.2
    untrained = AutoencoderTransformer(**{**PARAMS, "epochs": 1, "learning_rate": 1e-7}).fit(X)
    assert untrained.explained_["share"] < 0.05
    assert untrained.explained_["mean_loss"] == pytest.approx(model.explained_["mean_loss"])  # the same rows
    whole = AutoencoderTransformer(**{**PARAMS, "validation_split": 0.0}).fit(X)
    assert whole.explained_["on"] == "training rows" and whole.explained_["rows"] == N_ROWS


def test_save_load_round_trip_gives_the_same_latent_values(trained, X, tmp_path):
    model, before = trained
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = AutoencoderTransformer.load(path)

    after = loaded.transform(X)
    np.testing.assert_allclose(after, before, atol=1e-6)
    np.testing.assert_allclose(loaded.reconstruction_error(X), model.reconstruction_error(X), atol=1e-6)
    assert loaded.n_features_in_ == N_FEATURES
    # The encoder is built from the loaded network's own layers.
    encoder = loaded.encoder_
    assert encoder.get_layer(LATENT_LAYER) is loaded.model_.get_layer(LATENT_LAYER)


def test_saved_encoder_alone_encodes_like_the_trained_model(trained, X, tmp_path):
    """encoder.keras carries the trained weights (seed 004's encoder stayed bound to untrained layers)."""
    import keras

    model, before = trained
    path = tmp_path / "encoder.keras"
    model.save_encoder(path)
    encoder = keras.models.load_model(path)
    assert encoder.output_shape == (None, LATENT)
    np.testing.assert_allclose(encoder.predict(X, verbose=0), before, atol=1e-6)
    untrained = AutoencoderTransformer(**PARAMS)._build(N_FEATURES)
    fresh = keras.Model(untrained.inputs, untrained.get_layer(LATENT_LAYER).output)
    assert np.max(np.abs(fresh.predict(X, verbose=0) - before)) > 1e-3, "a check that could fail"


def test_the_saved_encoder_read_without_tensorflow_gives_the_same_latent_values(trained, X, tmp_path):
    """Stage 04's snapshots read the encoder's weights with NumPy (core/train_autoencoder/saved_encoder.py)."""
    from core.train_autoencoder.saved_encoder import SavedEncoder, load_saved_encoder

    model, before = trained
    model.save(tmp_path / "m.keras")
    encoder = load_saved_encoder(tmp_path / "m.keras")
    assert isinstance(encoder, SavedEncoder) and encoder.n_features_in_ == N_FEATURES
    np.testing.assert_allclose(encoder.transform(X), before, rtol=0, atol=1e-6)
    # A denoising network's dropout is off when encoding; its own file reads the same way.
    denoising = AutoencoderTransformer(**{**PARAMS, "input_dropout": 0.4}).fit(X)
    denoising.save(tmp_path / "d.keras")
    np.testing.assert_allclose(load_saved_encoder(tmp_path / "d.keras").transform(X), denoising.transform(X),
                               rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="expects 10 features"):
        encoder.transform(X[:, :4])
    # What the reader does not apply (batch normalisation) or recognise is left to Keras.
    normalised = AutoencoderTransformer(**{**PARAMS, "batch_norm": True, "epochs": 1}).fit(X)
    normalised.save(tmp_path / "bn.keras")
    assert load_saved_encoder(tmp_path / "bn.keras") is None
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    assert load_saved_encoder(tmp_path / "broken.keras") is None


def test_stage_04_snapshots_load_the_numpy_encoder_and_fall_back_to_keras_for_other_networks(trained, X, tmp_path):
    """core.cluster.snapshots._autoencoder: the verified file read into NumPy, or through Keras when the reader
    cannot apply the network (batch normalisation); both encode as the trained model does."""
    from types import SimpleNamespace

    from core.cluster import snapshots
    from core.framework import artifacts, paths
    from core.train_autoencoder.saved_encoder import SavedEncoder

    def loaded(model, name):
        path = tmp_path / name
        model.save(path)
        record = {"stage": paths.TRAIN_AUTOENCODER, "file": paths.AUTOENCODER_MODEL,
                  "sha256": artifacts.file_sha256(path)}
        return snapshots._autoencoder(SimpleNamespace(inputs=[record], input_path=lambda stage, file: path))

    model, before = trained
    plain = loaded(model, "plain.keras")
    assert isinstance(plain, SavedEncoder)
    np.testing.assert_allclose(plain.transform(X), before, rtol=0, atol=1e-6)
    normalised = AutoencoderTransformer(**{**PARAMS, "batch_norm": True, "epochs": 1}).fit(X)
    through_keras = loaded(normalised, "bn.keras")
    assert isinstance(through_keras, AutoencoderTransformer)
    np.testing.assert_allclose(through_keras.transform(X), normalised.transform(X), rtol=0, atol=1e-6)


def test_a_denoising_autoencoder_is_deterministic_drops_nothing_when_encoding_and_round_trips(X, tmp_path):
    params = {**PARAMS, "input_dropout": 0.4}
    model = AutoencoderTransformer(**params).fit(X)
    latent = model.transform(X)
    # Training is seeded, dropout included.
    np.testing.assert_allclose(AutoencoderTransformer(**params).fit(X).transform(X), latent, atol=1e-6)
    # Dropout changes what is learned ...
    assert not np.allclose(latent, AutoencoderTransformer(**PARAMS).fit(X).transform(X), atol=1e-3)
    # ... but is off when encoding: the same rows always give the same latent values.
    np.testing.assert_array_equal(model.transform(X), latent)
    model.save(tmp_path / "denoising.keras")
    loaded = AutoencoderTransformer.load(tmp_path / "denoising.keras")
    assert loaded.input_dropout == 0.4
    np.testing.assert_allclose(loaded.transform(X), latent, atol=1e-6)


# --- the estimator contract ------------------------------------------------------------------------

def draws() -> tuple:
    """The next value of every global generator fit might touch: Python, NumPy, TensorFlow."""
    import tensorflow as tf

    return random.random(), np.random.random(), tf.random.uniform([3]).numpy().tolist()


def test_fit_leaves_the_callers_random_state_and_op_determinism_as_they_were(X):
    """After fit the caller's random streams continue as if fit had not run; determinism is not toggled."""
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    def seed_everything():
        random.seed(123)
        np.random.seed(123)
        tf.random.set_seed(123)
        draws()  # part-way through each stream: a restore must keep the position, not only the seed

    seed_everything()
    expected = draws()
    for determinism_before in (False, True):
        (tf.config.experimental.enable_op_determinism if determinism_before else tf_config.disable_op_determinism)()
        seed_everything()
        AutoencoderTransformer(**PARAMS).fit(X)
        assert tf_config.is_op_determinism_enabled() is determinism_before
        assert draws() == expected, "fit reseeded a global generator and did not put it back"
    tf_config.disable_op_determinism()  # TensorFlow's default, for the tests that follow


def test_transform_refuses_the_wrong_number_of_features_and_input_that_is_not_a_finite_matrix(trained, X):
    model, _ = trained
    for method in (model.transform, model.reconstruction_error):
        with pytest.raises(ValueError, match=f"X has {N_FEATURES - 1} features, but AutoencoderTransformer is "
                                             f"expecting {N_FEATURES} features"):
            method(X[:, :-1])
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array instead"):
        model.transform(X[0])
    with pytest.raises(ValueError, match="Input X contains NaN"):
        model.transform(np.where(np.eye(N_ROWS, N_FEATURES, dtype=bool), np.nan, X))


def test_clone_of_a_fitted_transformer_is_unfitted_with_the_same_params(trained, X):
    model, latent = trained
    copy = clone(model)
    assert copy.get_params() == model.get_params() == {**AutoencoderTransformer().get_params(), **PARAMS}
    assert not hasattr(copy, "model_") and not hasattr(copy, "n_features_in_")
    with pytest.raises(NotFittedError):
        copy.transform(X)
    # Fitting the clone reproduces the original: the params are all there is to it.
    np.testing.assert_allclose(copy.fit(X).transform(X), latent, atol=1e-6)
