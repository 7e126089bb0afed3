"""PNG plots of training and evaluation results (matplotlib, headless)."""

from __future__ import annotations

import json
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_training_curve(log_path: str | Path, png_path: str | Path) -> Path:
    """Plot reconstruction loss and validation Pearson r per step (one line per seed) from a training log."""
    records = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    plt = _pyplot()
    fig, (ax_loss, ax_r) = plt.subplots(1, 2, figsize=(10, 3.8))
    for seed in sorted({r["seed"] for r in records}):
        rows = [r for r in records if r["seed"] == seed]
        ax_loss.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1, label=f"seed {seed}")
        evals = [r for r in rows if "validation_pearson_r" in r]
        ax_r.plot([r["step"] for r in evals], [abs(r["validation_pearson_r"]) for r in evals], marker="o",
                  label=f"seed {seed}")
    ax_loss.set(xlabel="step", ylabel="MSE(dec(enc(∇)), ∇±)", yscale="log", title="reconstruction loss")
    ax_r.set(xlabel="step", ylabel="|Pearson r| of h vs class", ylim=(0, 1.02), title="validation")
    for ax in (ax_loss, ax_r):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


__all__ = ["plot_training_curve"]
