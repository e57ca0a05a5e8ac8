"""The report's figures as PNG files: training curves, Figure 3 (conv1's kernels) and Figure 4 (fc7 neighbours).

Figures are built on matplotlib's Figure object, never through pyplot: no GUI backend is chosen or
needed, nothing global is kept between figures, and savefig renders the PNG with Agg.
"""
import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from paper_repro.core.atomic import atomic_write
from paper_repro.evaluation.colour import colour_specificity

WORD_CHARS = 18  # a class name longer than this is cut in the small titles of Figure 4


def _save(fig, path):
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))


def as_percent(values):
    """Fractions (train.py's log and evaluate's JSON) as percentages, as the paper gives them."""
    return [None if v is None else 100 * v for v in values]


def plot_curves(log, path):
    """Loss, top-1 and top-5 error per epoch with the learning-rate drops marked; return the drop epochs."""
    epochs = [e.get("epoch", i) for i, e in enumerate(log)]
    drops = [ep for ep, e in zip(epochs, log) if e.get("lr_dropped")]
    if not any("lr_dropped" in e for e in log):
        drops = [epochs[i - 1] for i in range(1, len(log)) if log[i].get("lr") != log[i - 1].get("lr")]
    fig = Figure(figsize=(14, 4))
    axes = fig.subplots(1, 3)
    panels = (
        ("loss (cross-entropy)", (("train_loss", "train"), ("val_loss", "val")), False),
        ("top-1 error (%)", (("train_top1_error", "train"), ("val_top1_error", "val (centre patch)"),
                             ("val_ten_view_top1_error", "val (ten views)")), True),
        ("top-5 error (%)", (("train_top5_error", "train"), ("val_top5_error", "val (centre patch)"),
                             ("val_ten_view_top5_error", "val (ten views)")), True),
    )
    colours = ("tab:blue", "tab:orange", "tab:green")  # train, val, val's ten views: one colour in every panel
    for ax, (title, series, percent) in zip(axes, panels):
        top = 0.0
        for (key, label), colour in zip(series, colours):
            # the epochs that have this value (train --ten-view-every N tests every N-th epoch only)
            points = [(x, e[key]) for x, e in zip(epochs, log) if e.get(key) is not None]
            if not points:
                continue
            xs, ys = zip(*points)
            if percent:
                ys = as_percent(ys)
            top = max([top] + list(ys))
            ax.plot(xs, ys, marker="o", ms=3, label=label, color=colour)
        if percent:
            ax.set_ylim(0, min(100.0, top * 1.1) if top > 0 else 1.0)
        for i, d in enumerate(drops):
            ax.axvline(d + 0.5, color="tab:red", ls="--", lw=1, label="lr / 10" if i == 0 else None)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return drops


def _mosaic(kernels, cols=8, pad=1):
    """Tile kernels (K x 3 x h x w) into one RGB image, each kernel stretched to [0, 1] on its own."""
    k = kernels.detach().double().cpu()
    n, _, h, w = k.shape
    rows = math.ceil(n / cols)
    out = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, 3))
    for i in range(n):
        x = k[i].permute(1, 2, 0).numpy()
        lo, hi = x.min(), x.max()
        x = (x - lo) / (hi - lo) if hi > lo else np.full_like(x, 0.5)
        r, c = divmod(i, cols)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = x
    return out


def conv1_columns(conv1, two_columns=True):
    """{name: kernels}: conv1's kernels split into column 0 (GPU 1) and column 1 (GPU 2), or one column."""
    if two_columns:
        half = conv1.shape[0] // 2
        return {"GPU 1 (column 0)": conv1[:half], "GPU 2 (column 1)": conv1[half:]}
    return {"one column": conv1}


def plot_conv1(conv1, path, two_columns=True):
    """Figure 3: conv1's kernels, column 0 (GPU 1) and column 1 (GPU 2) in separate panels; return the measures."""
    columns = conv1_columns(conv1, two_columns)
    measures = {name: colour_specificity(k) for name, k in columns.items()}
    mosaics = [_mosaic(k, cols=min(8, k.shape[0])) for k in columns.values()]
    scale = 0.62 / (conv1.shape[-1] + 1)  # inches per mosaic pixel: a kernel about 0.6 inch wide
    w = max(m.shape[1] for m in mosaics) * scale
    heights = [m.shape[0] * scale for m in mosaics]
    fig = Figure(figsize=(max(w, 4.5), sum(heights) + 0.75 * len(columns)))
    axes = fig.subplots(len(columns), 1, squeeze=False, gridspec_kw={"height_ratios": heights})
    for ax, (name, k), mos in zip(axes[:, 0], columns.items(), mosaics):
        ax.imshow(mos, interpolation="nearest")
        ax.set_title(f"{name}: {k.shape[0]} kernels, colour specificity {measures[name]:.2f}", fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    _save(fig, path)
    return measures


def short_names(words):
    """Class names for small titles: the first of each class's words ("goldfish, Carassius auratus" -> "goldfish")."""
    names = []
    for w in words:
        name = w.split(",")[0].strip()
        names.append(name if len(name) <= WORD_CHARS else name[:WORD_CHARS - 1] + ".")
    return names


def plot_neighbours(neighbours, val, train, path, names=None):
    """Figure 4: each query val image beside its nearest training images (green title: same class).

    Titles name the classes by `names` (aligned with the store's classes) where given, else by their ids.
    """
    names = names or val.classes
    k = max(len(n["train"]) for n in neighbours)
    fig = Figure(figsize=(1.7 * (k + 1), 1.95 * len(neighbours)))
    axes = fig.subplots(len(neighbours), k + 1, squeeze=False)
    for row, n in zip(axes, neighbours):
        img, label = val[n["val"]]
        row[0].imshow(img)
        row[0].set_title(f"val {n['val']}\n{names[label]}", fontsize=8, fontweight="bold")
        for ax, j, d in zip(row[1:], n["train"], n["dist"]):
            timg, tlabel = train[j]
            ax.imshow(timg)
            ax.set_title(f"{names[tlabel]}\nd={d:.3g}", fontsize=7,
                         color="tab:green" if tlabel == label else "tab:red")
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in row[len(n["train"]) + 1:]:
            ax.axis("off")
        for side in ("top", "bottom", "left", "right"):
            row[0].spines[side].set_color("black")
            row[0].spines[side].set_linewidth(2.5)
    fig.tight_layout()
    _save(fig, path)


def plot_step_losses(runs, chance, path, stall_step=None, xlabel="training step", ylim=None):
    """Training loss per read-back (RUN/steps.jsonl) of one or more runs, with ln(classes) and the stall check marked.

    runs: {label: [{"step": x, "loss": l}, ...]} (x in the unit `xlabel` names). The stall check is marked
    only where a run reached it. Returns the figure's x-axis limits.
    """
    fig = Figure(figsize=(9, 4.5))
    ax = fig.subplots()
    for label, steps in runs.items():
        ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=1, label=label)
    ax.axhline(chance, color="black", ls=":", lw=1, label=f"ln(classes) = {chance:.3f} (uniform guessing)")
    last = max((r["step"] for steps in runs.values() for r in steps), default=0)
    if stall_step and stall_step <= last:  # a marker past the last step would stretch the axis beyond the runs
        ax.axvline(stall_step, color="grey", ls="--", lw=1, label=f"stall check ({stall_step:g})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("training loss (mean over the read-back window)")
    ax.set_ylim(*(ylim or (0, max(2 * chance, 1.0))))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return ax.get_xlim()
