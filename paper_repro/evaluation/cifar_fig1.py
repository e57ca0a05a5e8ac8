"""Figure 1 from two runs' logs: training error per epoch of the ReLU and the tanh net, epochs to 25 %, their ratio."""
import json
import os

from matplotlib.figure import Figure

from paper_repro.core.atomic import atomic_write

PAPER_RATIO = 6  # "six times faster" (Figure 1's caption)


def read_errors(run):
    """[(epoch, train_top1_error)] of RUN/log.jsonl, in epoch order; ValueError naming the file if it has none."""
    path = os.path.join(run, "log.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: pass a run folder written by python -m paper_repro.train")
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                rows.append((int(record["epoch"]), float(record["train_top1_error"])))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path} line {n}: not a training log line with epoch and train_top1_error ({e})")
    if not rows:
        raise ValueError(f"{path} has no epochs yet")
    return sorted(rows)


def read_lr(run):
    """The run's initial learning rate (RUN/config.json's lr), or None if the file has none."""
    try:
        with open(os.path.join(run, "config.json")) as f:
            lr = json.load(f).get("lr")
    except (OSError, ValueError):
        return None
    return float(lr) if isinstance(lr, (int, float)) else None


def fastest(runs, target):
    """Index of the run that reaches `target` in the fewest epochs (none reaching it: the lowest error).

    runs: [[(epoch, error)]] of one unit at several learning rates, the paper's choice ("the learning
    rates for each network were chosen independently to make training as fast as possible").
    """
    def key(i):
        reached = epochs_to(runs[i], target)
        return (reached is None, reached or 0, min(e for _, e in runs[i]), i)
    return min(range(len(runs)), key=key)


def epochs_to(errors, target):
    """The first epoch whose training error is at or below `target` (None if none is)."""
    return next((epoch for epoch, e in errors if e <= target), None)


def summary(relu, tanh, target):
    """{relu: {...}, tanh: {...}, ratio, target, paper_ratio}: epochs to `target` of each and tanh's / ReLU's."""
    out = {"target": target, "paper_ratio": PAPER_RATIO}
    for name, errors in (("relu", relu), ("tanh", tanh)):
        out[name] = {"epochs_to_target": epochs_to(errors, target), "epochs": len(errors),
                     "lowest": min(e for _, e in errors), "train_top1_error": [e for _, e in errors]}
    a, b = out["relu"]["epochs_to_target"], out["tanh"]["epochs_to_target"]
    out["ratio"] = b / a if a and b else None
    return out


def plot(relu, tanh, target, path, note=""):
    """Training error rate against epochs, solid ReLU and dashed tanh, as the paper draws Figure 1."""
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    ax.plot([e for e, _ in relu], [v for _, v in relu], "-", color="black", label="ReLU")
    ax.plot([e for e, _ in tanh], [v for _, v in tanh], "--", color="black", label="tanh")
    ax.axhline(target, color="grey", linewidth=0.8)
    ax.set_xlabel("Epochs")
    ax.set_ylabel("Training error rate")
    ax.set_ylim(0, 0.75)
    ax.legend()
    if note:
        ax.set_title(note, fontsize=8)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
