"""Figure of results/real_photos.md: the training loss per step of several runs (their RUN/steps.jsonl).

python results/real_photos/plot_steps.py OUT.png CLASSES STALL_STEP LABEL=RUN [LABEL=RUN ...]
"""
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from paper_repro.figures import plot_step_losses  # noqa: E402  (after the path line: a script run from anywhere)


def main(argv):
    """Read each run's steps.jsonl and draw them on one figure."""
    out, classes, stall = argv[0], int(argv[1]), int(argv[2])
    runs = {}
    for item in argv[3:]:
        label, run = item.split("=", 1)
        with open(os.path.join(run, "steps.jsonl")) as f:
            runs[label] = [json.loads(line) for line in f if line.endswith("\n")]
    plot_step_losses(runs, math.log(classes), out, stall_step=stall)


if __name__ == "__main__":
    main(sys.argv[1:])
