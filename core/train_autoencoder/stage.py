"""Stage 03: learn a compact, deterministic latent representation of customers.

Reads ``features.parquet`` (the scaled model matrix) from stage 02 and writes
to ``artifacts/03_train_autoencoder/``: ``autoencoder-model.keras``,
``encoder.keras`` (the trained encoder alone, to encode new customers),
``latent.parquet`` (customer_id, latent_0..latent_{k-1},
reconstruction_error), ``history.json`` (the loss per epoch, and under
``explained`` the share of the held-out customers the network reconstructs
better than their column means) and ``loss-plot.png``.
Run ``python 03_train_autoencoder.py --help``.

The network is trained on at most ``fit_sample_size`` customers (a seeded
sample; everyone when there are fewer) and then encodes every customer a
batch at a time, so training time does not grow with the customer count.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from core.framework import paths
from core.framework.errors import PipelineError
from core.framework.progress import Progress
from core.framework.stage import Stage, StageContext

#: Key of ``history.json`` (and of the manifest's details) with the trained network's explained share
#: (:func:`core.train_autoencoder.autoencoder.explained_share`), which stage 04 reads.
EXPLAINED_KEY = "explained"

#: Customers encoded per batch: bounds the memory of the network's outputs, and paces the progress.
ENCODE_BATCH_ROWS = 100_000


def run(ctx: StageContext) -> None:
    """Read this stage's inputs, compute, write its outputs (see the module docstring)."""
    # Imported when the stage runs: TensorFlow and scikit-learn cost seconds that status and skips never need.
    from core.train_autoencoder import plots
    from core.train_autoencoder.autoencoder import AutoencoderTransformer
    from core.train_autoencoder.latent_size import choose_latent_dim

    matrix = ctx.read_parquet(paths.PREPARE_FEATURES, paths.FEATURES)
    X = matrix.drop(columns="customer_id").to_numpy(np.float32)
    _check_latent_dim(ctx, X.shape[1])
    params = dataclasses.asdict(ctx.config.train_autoencoder)
    sample_size = params.pop("fit_sample_size")
    rows = fit_sample_rows(len(X), sample_size, ctx.config.seed)
    size_choice = None
    if params["latent_dim"] == 0:  # chosen from the data: no labels, no training (core/train_autoencoder/latent_size.py)
        size_choice = choose_latent_dim(X if rows is None else X[rows], max_dim=_latent_ceiling(params, X.shape[1]),
                                        random_state=ctx.config.seed)
        params["latent_dim"] = size_choice.latent_dim
    model = AutoencoderTransformer(**params, random_state=ctx.config.seed)
    model.fit(X if rows is None else X[rows])
    latent, error = encode_in_batches(model, X)
    frame = pd.DataFrame(latent, columns=[f"latent_{i}" for i in range(latent.shape[1])])
    frame.insert(0, "customer_id", matrix["customer_id"].to_numpy())
    frame["reconstruction_error"] = error
    ctx.write_with(paths.AUTOENCODER_MODEL, model.save)
    ctx.write_with(paths.ENCODER_MODEL, model.save_encoder)
    ctx.write_parquet(paths.LATENT, frame)
    # The explained share travels with the history: stage 04 reads it to set an untrained latent space aside.
    ctx.write_json(paths.TRAINING_HISTORY, {**model.history_, EXPLAINED_KEY: model.explained_})
    ctx.write_with(paths.LOSS_PLOT, lambda tmp: plots.save_loss_plot(model.history_, tmp))
    epochs = len(model.history_["loss"])
    best = min(model.history_.get("val_loss", model.history_["loss"]))
    fitted_on = len(X) if rows is None else len(rows)
    explained = model.explained_
    ctx.details = {"epochs_trained": epochs, "best_loss": best, "input_dim": X.shape[1],
                   "latent_dim": latent.shape[1], "fit_customers": fitted_on, EXPLAINED_KEY: explained}
    if size_choice is not None:
        ctx.details["latent_dim_choice"] = size_choice.report()
    sample = "" if rows is None else f", trained on a sample of {fitted_on:,}"
    if size_choice is not None:
        sample += f" (latent size {latent.shape[1]} from the data: {size_choice.components_above_chance} directions above chance)"
    ctx.summary = (f"{len(frame):,} customers encoded {X.shape[1]} -> {latent.shape[1]} dims{sample}, "
                   f"{epochs} epochs, best loss {best:.4f}, explains {explained['share']:.1%} of the "
                   f"{explained['on']}")


def fit_sample_rows(n_rows: int, sample_size: int, seed: int) -> np.ndarray | None:
    """The rows the network trains on: None (all of them) when there are at most ``sample_size``.

    Otherwise ``sample_size`` rows drawn without replacement with
    ``default_rng(seed)``, in ascending order (the same customers for the
    same data and seed).
    """
    if n_rows <= sample_size:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=sample_size, replace=False))


def encode_in_batches(model, X: np.ndarray, batch_rows: int = ENCODE_BATCH_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Latent values and reconstruction error of every row, ``batch_rows`` at a time, with progress.

    Returns
    -------
    (ndarray of float32, shape (n, latent_dim), ndarray of float32, shape (n,))
    """
    latent, error = [], []
    with Progress(f"{paths.TRAIN_AUTOENCODER}: encoding", total=len(X), unit="customers") as progress:
        for start in range(0, len(X), batch_rows):
            part = X[start:start + batch_rows]
            latent.append(model.transform(part))
            error.append(model.reconstruction_error(part))
            progress.advance(len(part))
    return np.concatenate(latent), np.concatenate(error)


def _latent_ceiling(params: dict, n_inputs: int) -> int:
    """The largest latent size that is still a bottleneck: below the narrowest hidden layer and the inputs."""
    return max(1, min([n_inputs - 1, *[units - 1 for units in params["hidden_units"]]]))


def _check_latent_dim(ctx: StageContext, n_inputs: int) -> None:
    """Stop when the latent layer is not smaller than the model matrix: it would compress nothing.

    The config loader cannot know this (the number of model features comes
    from the data: a log without departments has fewer), so stage 03 checks
    it before training.
    """
    latent_dim = ctx.config.train_autoencoder.latent_dim
    if latent_dim < n_inputs and (latent_dim > 0 or n_inputs > 1):  # 0: chosen below the inputs in run()
        return
    fix = (f"use at most {n_inputs - 1}" if n_inputs > 1 else
           "add model features (prepare_features.model_features), the autoencoder has nothing to compress")
    raise PipelineError(f"train_autoencoder.latent_dim in {ctx.config.path} is {latent_dim}, but the model matrix "
                        f"({paths.FEATURES}) has {n_inputs} input(s): the latent layer must be smaller than its "
                        f"inputs; {fix}")


STAGE = Stage(
    name=paths.TRAIN_AUTOENCODER,
    inputs={paths.PREPARE_FEATURES: (paths.FEATURES,)},
    description="Train a seeded Keras autoencoder on a sample of the model matrix and encode every customer.",
    sections=("seed", "train_autoencoder"),
    run=run,
)
