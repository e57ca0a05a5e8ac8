"""The recipe study's table from its run folders: python results/released_recipe/summarise.py RUN [RUN ...].

Per run: steps done, the highest loss of steps 1-10, the mean loss of each 10-step window, the first
step from which the 10-step mean stays below ln(classes), and the epoch's centre-patch val errors
when the epoch finished. Reads only RUN/steps.jsonl, RUN/log.jsonl and RUN/config.json.
"""
import json
import math
import os
import sys


def summarise(run):
    """One markdown row for RUN."""
    config = json.load(open(os.path.join(run, "config.json")))
    chance = math.log(config.get("num_classes", 100))
    losses = {}
    for line in open(os.path.join(run, "steps.jsonl")):
        row = json.loads(line)
        losses[row["step"]] = row["loss"]
    steps = max(losses)
    window = {s: sum(losses[t] for t in range(s - 9, s + 1) if t in losses) / 10 for s in range(10, steps + 1)}
    below = [s for s in window if all(window[t] < chance for t in window if t >= s)]
    left = f"{min(below) - 9}-{min(below)}" if below else "not within the steps run"
    means = " / ".join(f"{window[s]:.3f}" for s in (30, 50, 70, 90, 110) if s in window)
    log = os.path.join(run, "log.jsonl")
    val = ""
    if os.path.isfile(log) and os.path.getsize(log):
        last = [json.loads(line) for line in open(log)][-1]
        val = f"{100 * last['val_top1_error']:.1f} / {100 * last['val_top5_error']:.1f}"
    first = max(losses[s] for s in range(1, 11) if s in losses)
    return f"| {os.path.basename(run)} | {steps} | {first:.2f} | {means} | {left} | {val} |"


if __name__ == "__main__":
    print("| run | steps | highest loss, steps 1-10 | mean loss of steps 21-30 / 41-50 / 61-70 / 81-90 / 101-110 "
          "| 10-step mean below ln(100) for good from | val top-1 / top-5 % (centre patch, after the epoch) |")
    print("|---|---|---|---|---|---|")
    for run in sys.argv[1:]:
        print(summarise(run))
