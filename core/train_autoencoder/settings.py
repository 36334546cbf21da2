"""Stage 03's config section, ``train_autoencoder``: its typed form and its checks."""

from __future__ import annotations

import dataclasses

from core.framework.schema import Problems, spec


@dataclasses.dataclass(frozen=True)
class TrainAutoencoderConfig:
    """Stage 03: the autoencoder."""

    hidden_units: tuple[int, ...] = spec(minimum=1, help="units of each encoder layer; the decoder mirrors them")
    latent_dim: int = spec(minimum=0, help="size of the latent representation; 0 = chosen from the data in stage 03 "
                           "(parallel analysis of the model matrix: the principal directions with more variance "
                           "than shuffled columns give, at least 2 and below the narrowest hidden layer)")
    activation: str = spec(choices=("relu", "elu", "selu", "tanh", "gelu"), help="hidden-layer activation")
    l2: float = spec(minimum=0.0, help="L2 weight penalty")
    batch_norm: bool = spec(help="batch normalisation after each hidden layer")
    input_dropout: float = spec(minimum=0.0, maximum=0.9, help="share of input values zeroed at random "
                                "in each training step (a denoising autoencoder); 0 = none")
    fit_sample_size: int = spec(minimum=2, help="the network is trained on at most this many customers (a seeded "
                                "sample) and then encodes everyone, so training time does not grow with the "
                                "customer count")
    epochs: int = spec(minimum=1, help="maximum training epochs")
    batch_size: int = spec(minimum=1, help="customers per gradient step")
    learning_rate: float = spec(exclusive_minimum=0.0, help="Adam learning rate")
    validation_split: float = spec(minimum=0.0, maximum=0.5, help="share of customers held out for early stopping")
    early_stopping_patience: int = spec(minimum=1, help="epochs without validation improvement before stopping")


def check_train_autoencoder(cfg: TrainAutoencoderConfig, problems: Problems) -> None:
    """The shape of the network: encoder layers that narrow towards a smaller latent layer.

    An autoencoder learns a compact representation only through a
    bottleneck: a latent layer at least as wide as the narrowest hidden
    layer, or a layer wider than the one before, is a setting mistake. Whether the
    latent layer is smaller than the model matrix is known only in stage 03
    (the number of model features comes from the data).
    """
    hidden = list(cfg.hidden_units)
    if not hidden:
        return  # the inputs feed the latent layer directly: stage 03 checks it is smaller than they are
    if any(later > earlier for earlier, later in zip(hidden, hidden[1:])):
        problems.add("train_autoencoder.hidden_units",
                     f"{hidden} widens; each encoder layer must be no wider than the one before, e.g. [32, 16]")
    if cfg.latent_dim >= min(hidden):  # 0 (chosen from the data) stays below the narrowest layer by construction
        problems.add("train_autoencoder.latent_dim",
                     f"{cfg.latent_dim} is not smaller than the narrowest hidden layer ({min(hidden)} units in "
                     f"train_autoencoder.hidden_units {hidden}): no bottleneck; use at most {min(hidden) - 1}")
