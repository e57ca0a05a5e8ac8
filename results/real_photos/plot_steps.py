"""Figure of results/real_photos.md: the training loss of several runs (RUN/steps.jsonl) against the images seen.

python results/real_photos/plot_steps.py OUT.png CLASSES STALL_STEP LABEL=RUN [LABEL=RUN ...]
Each run's steps are turned into images with its batch size (RUN/config.json); STALL_STEP is in
steps of 128 images, train's default batch.
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
        with open(os.path.join(run, "config.json")) as f:
            batch = json.load(f)["batch_size"]
        with open(os.path.join(run, "steps.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.endswith("\n")]
        runs[label] = [{"step": r["step"] * batch, "loss": r["loss"]} for r in rows]
    plot_step_losses(runs, math.log(classes), out, stall_step=stall * 128, xlabel="training images seen",
                     ylim=(3.5, 7.0))


if __name__ == "__main__":
    main(sys.argv[1:])
