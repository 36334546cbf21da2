"""Stage 03's encoder read from its saved network and run in NumPy, without loading TensorFlow.

Stage 04 encodes each snapshot window in the latent space. Loading the
saved network through Keras costs about 3.3 CPU-s there (TensorFlow's
import), more than the encoding itself, and 1 to 2 s more when the process
ends. The encoder of the shipped architecture is a chain of dense layers
(``x @ kernel + bias``, then ReLU or nothing) up to the ``latent`` layer,
so its weights are read from the ``.keras`` file (a zip of ``config.json``
and ``model.weights.h5``) and applied with NumPy in float32, as Keras's
``Dense`` computes them. On the default data every latent value equals the
Keras encoder's bit for bit (tests/test_autoencoder.py checks a trained
network against ``AutoencoderTransformer.transform``).

:func:`load_saved_encoder` returns None for any network that is not such a
chain (batch normalisation, another activation, a layout it does not
recognise); the caller then loads the network with Keras as before.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from core.train_autoencoder.autoencoder import INPUT_DROPOUT_LAYER, LATENT_LAYER

#: Activations applied here exactly as Keras applies them.
_ACTIVATIONS = {"relu": lambda h: np.maximum(h, np.float32(0)), "linear": lambda h: h}


class SavedEncoder:
    """The trained encoder as float32 matrix products; ``transform`` as :class:`AutoencoderTransformer`'s.

    Parameters
    ----------
    layers : list of (kernel, bias, activation)
        The dense layers from the inputs to the latent layer, in order.
    """

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray, str]]):
        self.layers = layers
        self.n_features_in_ = int(layers[0][0].shape[0])
        self.latent_dim = int(layers[-1][0].shape[1])

    def transform(self, X) -> np.ndarray:
        """Latent values of the rows of ``X`` (n_samples, n_features_in_), float32."""
        h = np.asarray(X, dtype=np.float32)
        if h.ndim != 2 or h.shape[1] != self.n_features_in_:
            raise ValueError(f"X has shape {h.shape}, but the encoder expects {self.n_features_in_} features")
        for kernel, bias, activation in self.layers:
            h = _ACTIVATIONS[activation](h @ kernel + bias)
        return h


def load_saved_encoder(path: Path | str) -> SavedEncoder | None:
    """The encoder of a ``.keras`` file saved by :meth:`AutoencoderTransformer.save`, or None if unsupported."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            weights = archive.read("model.weights.h5")
        chain = _encoder_chain(config["config"]["layers"])
        if chain is None:
            return None
        import h5py

        layers = []
        with h5py.File(io.BytesIO(weights), "r") as store:
            for slot, units, activation in chain:
                kernel = np.asarray(store[f"layers/{slot}/vars/0"], dtype=np.float32)
                bias = np.asarray(store[f"layers/{slot}/vars/1"], dtype=np.float32)
                if kernel.ndim != 2 or kernel.shape[1] != units or bias.shape != (units,):
                    return None
                if layers and layers[-1][0].shape[1] != kernel.shape[0]:
                    return None
                layers.append((kernel, bias, activation))
        return SavedEncoder(layers) if layers else None
    except (KeyError, TypeError, ValueError, OSError, zipfile.BadZipFile):
        return None  # not the layout this reader knows: Keras loads it


def _encoder_chain(layers: list[dict]) -> list[tuple[str, int, str]] | None:
    """``(weights slot, units, activation)`` of each dense layer up to the latent one, or None if not a plain chain.

    Keras stores each layer's weights under its class name in snake case, numbered in the order of the
    model's layers (``dense``, ``dense_1``, ...); every layer must take the previous one's output.
    """
    chain, seen, previous = [], {}, None
    for layer in layers:
        kind, settings = layer["class_name"], layer["config"]
        name = settings["name"]
        slot = _slot(kind, seen)
        if previous is not None and _inbound(layer) != previous:
            return None
        if kind == "Dense":
            if settings.get("activation") not in _ACTIVATIONS or not settings.get("use_bias", True):
                return None
            chain.append((slot, int(settings["units"]), settings["activation"]))
        elif not (kind == "InputLayer" and previous is None) and not (kind == "Dropout" and name == INPUT_DROPOUT_LAYER):
            return None  # batch normalisation or anything else this reader does not apply
        if name == LATENT_LAYER:
            return chain if kind == "Dense" else None
        previous = name
    return None


def _slot(kind: str, seen: dict[str, int]) -> str:
    """Keras's name for a layer's weights: snake-case class name, ``_1``, ``_2`` ... for the later ones."""
    snake = "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(kind))
    if snake in seen:
        seen[snake] += 1
        return f"{snake}_{seen[snake]}"
    seen[snake] = 0
    return snake


def _inbound(layer: dict) -> str | None:
    """Name of the one layer whose output ``layer`` takes (Keras 3's ``inbound_nodes``)."""
    nodes = layer.get("inbound_nodes") or []
    if len(nodes) != 1:
        return None
    arguments = nodes[0].get("args") or []
    if len(arguments) != 1 or not isinstance(arguments[0], dict):
        return None
    history = arguments[0].get("config", {}).get("keras_history")
    return history[0] if history else None
