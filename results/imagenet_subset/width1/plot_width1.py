"""Learning curves of the width-1 Imagewoof runs (results/imagenet_subset.md, item 2) from their copied logs.

python results/imagenet_subset/width1/plot_width1.py   # writes width1_curves.png and prints the per-epoch table
"""
import glob
import json
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RUNS = [("bias1", "ours, bias 1 (the released recipe), plateau schedule"),
        ("bias01", "ours, bias 0.1, plateau schedule"),
        ("torchvision", "torchvision's AlexNet, its reference recipe")]


def lines(path):
    """The JSON lines of a log file ([] where there is none)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    """Plot val error per epoch, ten-view tests and training loss per step; print a table row per run and epoch."""
    fig, (ax_val, ax_loss) = plt.subplots(1, 2, figsize=(11, 5))
    for name, label in RUNS:
        epochs = lines(os.path.join(HERE, name, "log.jsonl"))
        steps = lines(os.path.join(HERE, name, "steps.jsonl"))
        with open(os.path.join(HERE, name, "config.json")) as f:
            batch = json.load(f)["batch_size"]
        per_epoch = -(-epochs[0]["train_images"] // batch) if epochs else 1  # the last batch of an epoch is partial
        if epochs:
            line, = ax_val.plot([e["epoch"] for e in epochs], [100 * e["val_top1_error"] for e in epochs], "o-",
                                label=label + " (centre)")
            # ten-view tests, one file per tested epoch: eval_epoch<N>.json
            tested = sorted((int(re.search(r"eval_epoch(\d+)", f).group(1)), f)
                            for f in glob.glob(os.path.join(HERE, name, "eval_epoch*.json")))
            if tested:
                errors = [100 * json.load(open(f))["top1_error"] for _, f in tested]
                ax_val.plot([e for e, _ in tested], errors, "*", ms=12, color=line.get_color(),
                            label=label + " (ten views)")
        if steps:
            ax_loss.plot([s["step"] / per_epoch for s in steps], [s["loss"] for s in steps], label=label, lw=1)
        for e in epochs:
            top5 = e.get("val_top5_error")
            print(f"| {name} | {e['epoch']} | {e['train_loss']:.3f} | {100 * e['val_top1_error']:.2f} | "
                  f"{'' if top5 is None else f'{100 * top5:.2f}'} | {e['images_per_s']:.1f} | {e['lr']:g} |")
    ax_val.axhline(90, color="grey", ls=":", label="chance (90 %)")
    ax_val.set(xlabel="epoch", ylabel="val top-1 error (%)", title="Imagewoof, width 1")
    ax_loss.set(xlabel="epoch (steps / steps per epoch)", ylabel="training loss (mean of 10 steps)",
                title="training loss")
    ax_val.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    ax_loss.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "width1_curves.png"), dpi=110)


if __name__ == "__main__":
    main()
