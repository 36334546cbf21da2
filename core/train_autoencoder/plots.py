"""Stage 03's figure: the training loss curve, saved as PNG (matplotlib, without a display)."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")  # no screen on servers or in CI; must precede importing pyplot
    import matplotlib.pyplot as plt

    return plt


def save_loss_plot(history: dict[str, list[float]], path: Path) -> None:
    """Training (and validation) loss per epoch, log scale, to ``path`` (PNG)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for key, label in (("loss", "training"), ("val_loss", "validation")):
        if key in history:
            ax.plot(range(1, len(history[key]) + 1), history[key], label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean squared reconstruction error")
    ax.set_yscale("log")
    ax.set_title("Autoencoder training")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
