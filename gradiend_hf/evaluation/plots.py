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


def plot_h_distribution(report_or_groups, png_path: str | Path, *, title: str | None = None) -> Path:
    """Plot the feature values h of each group on [−1, 1]: a violin, the points, and the group mean marked.

    Args:
        report_or_groups: an `EncoderReport`, or a mapping of group name to h values (drawn top to bottom in
            mapping order).
        png_path: where to write the PNG.
        title: the plot title; for a report, by default the feature and its correlations.
    """
    import numpy as np

    raw = getattr(report_or_groups, "h", report_or_groups)  # a report's h per group, or the mapping itself
    groups = {name: [float(v) for v in values] for name, values in raw.items()}
    labels = getattr(report_or_groups, "labels", {})
    if title is None and hasattr(report_or_groups, "metrics"):
        m = report_or_groups.metrics
        title = (f"{report_or_groups.feature} ({report_or_groups.split}): Pearson r {m.pearson_r:.3f} (all groups), "
                 f"{m.pearson_r_classes:.3f} (classes), sign accuracy {m.sign_accuracy:.3f}")
    plt = _pyplot()
    import matplotlib

    # matplotlib 3.10 replaced `vert=False` by `orientation="horizontal"` (and deprecated the former in 3.11)
    version = tuple(int(p) for p in matplotlib.__version__.split(".")[:2] if p.isdigit())
    horizontal = {"orientation": "horizontal"} if version >= (3, 10) else {"vert": False}
    colours = {1.0: "tab:red", -1.0: "tab:blue", 0.0: "tab:gray"}
    fig, ax = plt.subplots(figsize=(9, 1.0 + 0.9 * max(len(groups), 1)))
    rng = np.random.default_rng(0)  # the same jitter every time
    names = list(groups)
    for row, name in enumerate(names):
        y = len(names) - 1 - row
        values = np.asarray(groups[name], dtype=float)
        values = values[np.isfinite(values)]
        colour = colours.get(labels.get(name), f"C{row}")
        if len(values) >= 2 and np.ptp(values) > 0:
            parts = ax.violinplot(values, positions=[y], widths=0.8, showextrema=False, **horizontal)
            for body in parts["bodies"]:
                body.set(facecolor=colour, edgecolor=colour, alpha=0.25)
        ax.scatter(values, y + rng.uniform(-0.15, 0.15, len(values)), s=8, color=colour, alpha=0.6, lw=0)
        if len(values):
            mean = float(values.mean())
            ax.plot([mean, mean], [y - 0.38, y + 0.38], color="black", lw=2)
            ax.annotate(f"mean {mean:+.2f}", (mean, y + 0.38), textcoords="offset points", xytext=(0, 2),
                        ha="center", fontsize=8)
    label_text = {1.0: ", label +1", -1.0: ", label −1", 0.0: ", label 0"}
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels([f"{n}\n(n = {len(groups[n])}{label_text.get(labels.get(n), '')})" for n in reversed(names)],
                       fontsize=8)
    ax.axvline(0.0, color="gray", lw=0.8, ls="--")
    ax.set(xlim=(-1.05, 1.05), ylim=(-0.6, len(names) - 0.3), xlabel="h (encoder output, first neuron)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


def plot_search_heatmap(result, png_path: str | Path) -> Path:
    """Plot a decoder search: one panel per criterion, h* by α, colour = index · LM factor.

    Points whose LM factor was not scored (it could not make them best) show their index, an upper bound of the
    score, dotted; pruned points are hatched and blank. The best point of each panel is framed in red (if the base
    model is best, the title says so).

    Args:
        result: a `DecoderSearchResult`.
        png_path: where to write the PNG.
    """
    import numpy as np
    from matplotlib.patches import Rectangle

    hs = sorted({p.h for p in result.points})
    alphas = sorted({p.alpha for p in result.points})
    cell = {(p.h, p.alpha): p for p in result.points}
    criteria = result.criteria
    plt = _pyplot()
    width = max(4.5, 0.42 * len(alphas) + 2.2)
    fig, axes = plt.subplots(1, len(criteria), figsize=(width * len(criteria), max(3.2, 0.34 * len(hs) + 2.0)),
                             squeeze=False)
    for ax, criterion in zip(axes[0], criteria):
        grid = np.full((len(hs), len(alphas)), np.nan)
        bound = np.zeros_like(grid, dtype=bool)  # colour is the index (an upper bound): LM factor not scored
        for i, h in enumerate(hs):
            for j, alpha in enumerate(alphas):
                point = cell.get((h, alpha))
                if point is None or point.indices is None:
                    continue
                score = point.score(criterion)
                grid[i, j] = point.indices[criterion] if score is None else score
                bound[i, j] = score is None
        finite = grid[np.isfinite(grid)]
        base_score = result.base.score(criterion)
        low = min([*finite.tolist(), base_score]) if finite.size else 0.0
        high = max([*finite.tolist(), base_score]) if finite.size else 1.0
        image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap="viridis",
                          vmin=low, vmax=high if high > low else low + 1e-9)
        for i in range(len(hs)):
            for j in range(len(alphas)):
                if not np.isfinite(grid[i, j]):
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="none", edgecolor="0.6",
                                           hatch="///", lw=0))
                elif bound[i, j]:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="none", edgecolor="white",
                                           hatch="..", lw=0))
        best = result.best(criterion)
        if best.is_base:
            where = "the base model"
        else:
            where = f"h*={best.h:g}, α={best.alpha:g}"
            ax.add_patch(Rectangle((alphas.index(best.alpha) - 0.5, hs.index(best.h) - 0.5), 1, 1,
                                   facecolor="none", edgecolor="red", lw=2.2))
        ax.set_title(f"{criterion}: best {best.score(criterion):.3f} at {where}\n(base {base_score:.3f}; "
                     f"dotted: index, LM not scored; hatched: pruned)", fontsize=9)
        ax.set_xticks(range(len(alphas)))
        ax.set_xticklabels([f"{a:g}" for a in alphas], rotation=90, fontsize=7)
        ax.set_yticks(range(len(hs)))
        ax.set_yticklabels([f"{h:g}" for h in hs], fontsize=7)
        ax.set(xlabel="α (learning rate)", ylabel="h* (feature factor)")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="index · LM factor")
    fig.suptitle(f"Decoder search: {result.feature} ({result.settings.get('split', '?')} split)", fontsize=10)
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


__all__ = ["plot_h_distribution", "plot_search_heatmap", "plot_training_curve"]
