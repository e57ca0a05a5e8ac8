"""The sweep's figure as a PNG: errors per group, differences from the reference (matplotlib's Figure, Agg; no pyplot).

Left: each run's top-1 error as a dot and its group's mean ± std as a bar; right (with a reference):
each group's mean difference from the reference with its 95 % confidence interval, zero marked.
"""
from matplotlib.figure import Figure

from paper_repro.core.atomic import atomic_write

LABEL_CHARS = 48  # a group's label is cut beyond this on the axis; the table has it whole


def _label(row):
    text = f"{row['group']}: {row['label']}"
    return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "…"


def plot_sweep(result, path):
    """Write the sweep figure of `result` (evaluation/sweep.py's sweep()) to `path`."""
    rows, ref = result["groups"], result["reference"]
    runs = {run["run"]: run for run in result["runs"]}
    fig = Figure(figsize=(13 if ref is not None else 7, 1.2 + 0.5 * len(rows)))
    axes = fig.subplots(1, 2 if ref is not None else 1, squeeze=False)[0]
    ys = list(range(len(rows)))[::-1]  # the first group on top, as in the table
    ax = axes[0]
    for y, row in zip(ys, rows):
        kind = row["kind"]
        ax.scatter([100 * runs[r]["results"][kind][0] for r in row["runs"]], [y] * len(row["runs"]),
                   s=18, color="tab:blue", zorder=3)
        top1 = row["top1"]
        ax.errorbar(100 * top1["mean"], y, xerr=100 * top1["std"] if top1["std"] is not None else None,
                    fmt="s", color="black", ms=5, capsize=4, zorder=2)
    ax.set_yticks(ys)
    ax.set_yticklabels([_label(r) for r in rows], fontsize=8)
    kinds = sorted({r["kind"] for r in rows})
    ax.set_xlabel(f"top-1 error, % ({' / '.join(kinds)})")
    ax.grid(axis="x", alpha=0.3)
    if ref is not None:
        ax = axes[1]
        for y, row in zip(ys, rows):
            d = row.get("diff_top1")
            if d is None:
                continue
            ax.errorbar(100 * d["mean"], y, xerr=100 * d["ci"] if d["ci"] is not None else None, fmt="o",
                        color="tab:red" if d["resolved"] else "tab:grey", capsize=4)
        ax.axvline(0, color="black", lw=1)
        ax.set_yticks(ys)
        ax.set_yticklabels([])
        ax.set_xlabel(f"top-1 difference from group {rows[ref]['group']}, percentage points (95 % CI; red: excludes 0)")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
