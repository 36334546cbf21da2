"""A deterministic dense autoencoder as an sklearn-style transformer.

Keras keeps global state (random generators, layer-name counters) and the
encoder of a reloaded model must come from the *loaded* layers, not from
layers built before training. This wrapper hides both: ``fit`` seeds
Python, NumPy and TensorFlow from ``random_state`` and turns op determinism
on for the training only, then puts back what the caller had (so fitting a
model never reseeds the caller's random numbers or switches determinism on
or off behind its back); ``transform`` and ``reconstruction_error`` run
with op determinism on in the same way. The encoder is always rebuilt from
``model_`` by layer name.

TensorFlow is imported lazily so that importing ``core`` stays fast. The
first import sets two environment variables when unset
(``TF_ENABLE_ONEDNN_OPTS=0``, ``TF_CPP_MIN_LOG_LEVEL=3``): TensorFlow reads
them once, when it loads, so they are process settings that cannot be put
back afterwards, not state ``fit`` changes.
"""

from __future__ import annotations

import contextlib
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

log = logging.getLogger(__name__)

LATENT_LAYER = "latent"
INPUT_DROPOUT_LAYER = "input_dropout"


def _keras():
    import os

    # TensorFlow's C++ start-up chatter (oneDNN notes, a tf.data attribute warning) is not ours to fix.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # oneDNN may reorder float sums between runs; off, the same seed gives the same latent values.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import keras
    import tensorflow as tf

    return keras, tf


@contextlib.contextmanager
def op_determinism():
    """TensorFlow op determinism on inside the block, then as it was before."""
    _, tf = _keras()
    from tensorflow.python.framework import config as tf_config

    was_on = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was_on:
            tf_config.disable_op_determinism()


@contextlib.contextmanager
def seeded(seed: int):
    """Python, NumPy and TensorFlow seeded with ``seed`` inside the block, then restored.

    What ``keras.utils.set_random_seed`` seeds, minus Keras's own global
    seed generator, which this network does not draw from (its dropout has
    its own seed). Afterwards Python's and NumPy's global generators and
    TensorFlow's global seed and op-seed sequence continue exactly where the
    caller left them. TensorFlow has no public getter for the eager seed
    state; the two private attributes read here are those of the pinned
    tensorflow 2.21 (pyproject.toml), and tests/test_autoencoder.py checks
    the restore.
    """
    _, tf = _keras()
    from tensorflow.python.eager import context

    python_state, numpy_state = random.getstate(), np.random.get_state()
    eager = context.context()
    tf_seed, tf_op_seeds = eager._seed, getattr(eager, "_rng", None)
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        tf.random.set_seed(tf_seed)  # the global seed (and TensorFlow clears its cached random kernels)
        if tf_op_seeds is None:
            eager.__dict__.pop("_rng", None)  # never seeded: as before any set_seed
        else:
            eager._rng = tf_op_seeds  # the caller's op-seed sequence, where it was


class AutoencoderTransformer(TransformerMixin, BaseEstimator):
    """Dense autoencoder; ``transform`` returns the latent representation.

    Parameters
    ----------
    hidden_units : tuple of int
        Encoder layer widths; the decoder mirrors them.
    latent_dim : int
    activation : str
    l2 : float
        L2 penalty on every dense kernel.
    batch_norm : bool
        Batch normalisation after each hidden layer.
    input_dropout : float
        Share of input values zeroed at random in each training step (a
        denoising autoencoder; nothing is dropped when encoding). A customer
        with one or two orders shows a corrupted, partial version of the
        mix their kind of shopper buys; trained to rebuild full profiles
        from partial ones, the encoder places such customers near the
        others of their kind instead of scattering them (docs/decisions.md
        has the measurements). 0 = a plain autoencoder.
    epochs, batch_size : int
    learning_rate : float
    validation_split : float
        Share of rows (the last ones after a seeded shuffle) held out for
        early stopping; 0 disables it.
    early_stopping_patience : int
    random_state : int

    Attributes
    ----------
    model_ : keras.Model
        The trained autoencoder (best validation weights restored).
    history_ : dict of str to list of float
        ``loss`` (and ``val_loss``) per epoch.
    explained_ : dict
        How much of the held-out rows the trained network reconstructs
        (:func:`explained_share`): ``share``, ``loss``, ``mean_loss``,
        ``rows``, ``on``. A network that learnt nothing reconstructs no
        better than the training column means (share near 0); stage 04 sets
        such a latent space aside when choosing the primary segmentation.
    n_features_in_ : int
    """

    def __init__(self, hidden_units=(32, 16), latent_dim=8, activation="relu", l2=0.0, batch_norm=False,
                 input_dropout=0.0, epochs=100, batch_size=256, learning_rate=1e-3, validation_split=0.2,
                 early_stopping_patience=10, random_state=0):
        self.hidden_units = hidden_units
        self.latent_dim = latent_dim
        self.activation = activation
        self.l2 = l2
        self.batch_norm = batch_norm
        self.input_dropout = input_dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_split = validation_split
        self.early_stopping_patience = early_stopping_patience
        self.random_state = random_state

    def _build(self, n_features: int):
        keras, _ = _keras()
        reg = keras.regularizers.L2(self.l2) if self.l2 > 0 else None
        inputs = keras.Input(shape=(n_features,), name="features")
        x = inputs
        if self.input_dropout > 0:
            # Active in training only; seeded, so training stays deterministic.
            x = keras.layers.Dropout(self.input_dropout, seed=self.random_state, name=INPUT_DROPOUT_LAYER)(x)
        for i, units in enumerate(self.hidden_units):
            x = keras.layers.Dense(units, activation=self.activation, kernel_regularizer=reg,
                                   name=f"encoder_{i}")(x)
            if self.batch_norm:
                x = keras.layers.BatchNormalization(name=f"encoder_bn_{i}")(x)
        latent = keras.layers.Dense(self.latent_dim, activation="linear", kernel_regularizer=reg,
                                    name=LATENT_LAYER)(x)
        x = latent
        for i, units in enumerate(reversed(self.hidden_units)):
            x = keras.layers.Dense(units, activation=self.activation, kernel_regularizer=reg,
                                   name=f"decoder_{i}")(x)
            if self.batch_norm:
                x = keras.layers.BatchNormalization(name=f"decoder_bn_{i}")(x)
        outputs = keras.layers.Dense(n_features, activation="linear", name="reconstruction")(x)
        model = keras.Model(inputs, outputs, name="autoencoder")
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=self.learning_rate), loss="mse")
        return model

    def fit(self, X, y=None) -> "AutoencoderTransformer":
        """Train on ``X`` (n_samples, n_features), deterministically for a given ``random_state``.

        Seeding and op determinism apply to the training only: when ``fit``
        returns, Python's, NumPy's and TensorFlow's global random state and
        TensorFlow's op-determinism switch are as the caller left them.
        """
        X = self._validate(X, reset=True)  # sets n_features_in_
        with seeded(self.random_state), op_determinism():
            self._train(X)
        return self

    def _train(self, X: np.ndarray) -> None:
        """Mini-batch Adam with early stopping on the held-out rows, in a loop of our own.

        What ``keras.Model.fit`` with ``EarlyStopping(restore_best_weights=True)``
        does, without its cost per epoch: fit makes new tf.data iterators and a
        validation pass with its own callbacks every epoch, which on this
        small network cost as much as the gradient steps (docs/decisions.md).
        Here each step is one call of the model's own ``train_step`` (the
        compiled loss, the L2 penalties and the optimizer) as a graph, the
        held-out rows are scored in one call of ``test_step``, and the rows
        are shuffled every epoch by a NumPy generator seeded with
        ``random_state``. ``loss`` is the batch-size-weighted mean over the
        epoch's steps, as fit reports it.
        """
        model = self.model_ = self._build(X.shape[1])
        rng = np.random.default_rng(self.random_state)
        order = rng.permutation(len(X))
        n_val = int(round(len(X) * self.validation_split))
        use_validation = n_val >= 1 and len(X) - n_val >= 1
        train_rows, val_rows = (order[:-n_val], order[-n_val:]) if use_validation else (order, None)
        X_train = X[train_rows]
        train_step, test_step = _compiled_steps(model)
        history: dict[str, list[float]] = {"loss": []}
        if use_validation:
            history["val_loss"] = []
        best, best_weights, wait = np.inf, None, 0
        with _epoch_progress(self.epochs) as progress:
            for _ in range(self.epochs):
                model.reset_metrics()
                rows = rng.permutation(len(X_train))
                for start in range(0, len(rows), self.batch_size):
                    batch = X_train[rows[start:start + self.batch_size]]
                    logs = train_step(batch)
                history["loss"].append(float(logs["loss"]))
                if use_validation:
                    model.reset_metrics()
                    history["val_loss"].append(float(test_step(X[val_rows])["loss"]))
                monitored = history["val_loss" if use_validation else "loss"][-1]
                progress.advance(1, _epoch_note(history))
                if monitored < best:
                    best, best_weights, wait = monitored, model.get_weights(), 0
                    continue
                wait += 1
                if wait >= self.early_stopping_patience:
                    break
        model.reset_metrics()
        if best_weights is not None:
            model.set_weights(best_weights)  # the best epoch's weights, as restore_best_weights does
        self.history_ = history
        scored = X[val_rows] if use_validation else X_train
        self.explained_ = explained_share(scored, self._reconstruct(scored), X_train.mean(axis=0),
                                          on="held-out rows" if use_validation else "training rows")

    def _reconstruct(self, X: np.ndarray) -> np.ndarray:
        """The network's reconstruction of ``X`` (dropout off), in float32."""
        with op_determinism():
            return self.model_.predict(X, batch_size=4096, verbose=0)

    def _validate(self, X, reset: bool = False) -> np.ndarray:
        """``X`` as a finite, 2-d float32 array; unless ``reset``, with the number of columns ``fit`` saw.

        scikit-learn's own validation, so the errors read as every estimator's do (NaN, infinity, sparse,
        1-d or empty input; "X has 9 features, but AutoencoderTransformer is expecting 10 features as input").
        """
        return validate_data(self, X, dtype=np.float32, reset=reset)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]  # the network computes in float32
        return tags

    @property
    def encoder_(self):
        """The encoder half, rebuilt from ``model_``'s own layers."""
        check_is_fitted(self, "model_")
        keras, _ = _keras()
        return keras.Model(self.model_.inputs, self.model_.get_layer(LATENT_LAYER).output, name="encoder")

    def transform(self, X) -> np.ndarray:
        """Latent representation, shape (n_samples, latent_dim).

        Raises ``ValueError`` when ``X`` does not have the ``n_features_in_``
        columns the network was trained on.
        """
        check_is_fitted(self, "model_")
        X = self._validate(X)
        with op_determinism():
            return self.encoder_.predict(X, batch_size=4096, verbose=0)

    def reconstruction_error(self, X) -> np.ndarray:
        """Mean squared reconstruction error per row, shape (n_samples,): large for unusual customers."""
        check_is_fitted(self, "model_")
        X = self._validate(X)
        return np.mean((X - self._reconstruct(X)) ** 2, axis=1)

    def save(self, path: Path) -> None:
        """Save the trained network as a ``.keras`` file."""
        check_is_fitted(self, "model_")
        self.model_.save(path)

    def save_encoder(self, path: Path) -> None:
        """Save the encoder alone (features in, latent values out) as a ``.keras`` file.

        For tools that only encode: ``keras.models.load_model(path).predict(X)``
        gives :meth:`transform`'s values. It is rebuilt from the trained
        network's layers, so it carries the trained weights.
        """
        self.encoder_.save(path)

    @classmethod
    def load(cls, path: Path, **params: Any) -> "AutoencoderTransformer":
        """A fitted transformer from a saved ``.keras`` file."""
        keras, _ = _keras()
        # safe_mode refuses Lambda layers (their Python bytecode would run on load); this network has none.
        model = keras.saving.load_model(path, safe_mode=True)
        encoder_layers = [layer for layer in model.layers if layer.name.startswith("encoder_")
                          and not layer.name.startswith("encoder_bn_")]
        # The architecture comes from the saved network, so get_params() describes what was loaded.
        found = {
            "hidden_units": tuple(int(layer.units) for layer in encoder_layers),
            "latent_dim": int(model.get_layer(LATENT_LAYER).units),
            "activation": encoder_layers[0].get_config()["activation"] if encoder_layers else "relu",
            "batch_norm": any(layer.name.startswith("encoder_bn_") for layer in model.layers),
            "input_dropout": float(model.get_layer(INPUT_DROPOUT_LAYER).rate)
            if any(layer.name == INPUT_DROPOUT_LAYER for layer in model.layers) else 0.0,
        }
        self = cls(**{**params, **found})
        self.model_ = model
        self.n_features_in_ = int(model.inputs[0].shape[-1])
        return self


def explained_share(X: np.ndarray, rebuilt: np.ndarray, column_means: np.ndarray, on: str) -> dict[str, Any]:
    """The share of ``X``'s squared deviation from ``column_means`` that the reconstruction ``rebuilt`` removes.

    ``1 - mean((X - rebuilt)^2) / mean((X - column_means)^2)``: the
    reconstruction's mean squared error against that of the plainest
    prediction, every customer rebuilt as the training rows' column means
    (what an autoencoder that learnt nothing converges to). 1 is a perfect
    reconstruction, 0 no better than the means; below 0, worse. On the
    held-out rows (``on`` says which), the weights are the restored best
    epoch's, and the L2 penalty is left out: it is not reconstruction.

    Returns
    -------
    dict
        ``share``, ``loss`` (the reconstruction's mean squared error),
        ``mean_loss`` (the column means'), ``rows``, ``on``.
    """
    X = np.asarray(X, dtype=np.float64)
    loss = float(np.mean((X - np.asarray(rebuilt, dtype=np.float64)) ** 2))
    mean_loss = float(np.mean((X - np.asarray(column_means, dtype=np.float64)) ** 2))
    share = 1.0 - loss / mean_loss if mean_loss > 0 else 0.0  # constant columns: nothing to explain
    return {"share": share, "loss": loss, "mean_loss": mean_loss, "rows": int(len(X)), "on": on}


def _compiled_steps(model):
    """The model's ``train_step`` and ``test_step`` (input = target) as graph functions, each traced once.

    The signature leaves the batch dimension open, so the epoch's last,
    partial batch and the held-out rows use the same graph instead of a
    second tracing (a second or more of this stage's CPU time each).
    """
    _, tf = _keras()
    signature = [tf.TensorSpec([None, model.inputs[0].shape[-1]], tf.float32)]
    train = tf.function(lambda batch: model.train_step((batch, batch)), input_signature=signature)
    test = tf.function(lambda batch: model.test_step((batch, batch)), input_signature=signature)
    return train, test


def _epoch_note(history: dict[str, list[float]]) -> str:
    val = f", val_loss {history['val_loss'][-1]:.4f}" if history.get("val_loss") else ""
    return f"loss {history['loss'][-1]:.4f}{val}"


def _epoch_progress(epochs: int):
    """Epochs done and the time left (:class:`core.framework.progress.Progress`).

    The estimate assumes every epoch runs: early stopping may end sooner, so it is an upper bound.
    """
    from core.framework.progress import Progress

    return Progress("autoencoder training (early stopping may end it sooner)", total=epochs, unit="epochs")
