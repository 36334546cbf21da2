"""Stage 03's config section, ``train_autoencoder``: its typed form."""

from __future__ import annotations

import dataclasses

from core.framework.schema import spec


@dataclasses.dataclass(frozen=True)
class TrainAutoencoderConfig:
    """Stage 03: the autoencoder."""

    hidden_units: tuple[int, ...] = spec(minimum=1, help="units of each encoder layer; the decoder mirrors them")
    latent_dim: int = spec(minimum=1, help="size of the latent representation")
    activation: str = spec(choices=("relu", "elu", "selu", "tanh", "gelu"), help="hidden-layer activation")
    l2: float = spec(minimum=0.0, help="L2 weight penalty")
    batch_norm: bool = spec(help="batch normalisation after each hidden layer")
    input_dropout: float = spec(minimum=0.0, maximum=0.9, help="share of input values zeroed at random "
                                "in each training step (a denoising autoencoder); 0 = none")
    epochs: int = spec(minimum=1, help="maximum training epochs")
    batch_size: int = spec(minimum=1, help="customers per gradient step")
    learning_rate: float = spec(exclusive_minimum=0.0, help="Adam learning rate")
    validation_split: float = spec(minimum=0.0, maximum=0.5, help="share of customers held out for early stopping")
    early_stopping_patience: int = spec(minimum=1, help="epochs without validation improvement before stopping")
