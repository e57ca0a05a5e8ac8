"""python -m paper_repro.demo: the whole pipeline on a generated ILSVRC-shaped data set, no download.

generate archives -> build the 256x256 store -> train a narrow two-column net -> ten-view
evaluation -> report. Every stage runs through the same command line a user would type, so
the demo tests the product, and each command is printed before it runs.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import time


def run(cmd, env=None):
    """Print `cmd`, run it, fail loudly if it fails; return its wall time in seconds."""
    print("\n$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    return time.perf_counter() - start


def get_args_parser():
    """The demo's command line: where to work, where the report goes, and how big the demo is."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/demo", help="where the report (report.md + figures) goes")
    p.add_argument("--workdir", default="demo_work", help="scratch: archives, store, run folder")
    p.add_argument("--classes", type=int, default=10, help="classes in the generated data set")
    p.add_argument("--train-per-class", type=int, default=100)
    p.add_argument("--val-per-class", type=int, default=20)
    p.add_argument("--config", default="demo_cpu",
                   help="training config (paper_repro/configs/): a 1/4-width net with the init that lets it learn")
    p.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--gpus", default="cpu,cpu",
                   help="device spec for train and evaluate (see train --help); on the CPU the two-column "
                        "layout is the faster one")
    return p


def main(args):
    """Run the five stages; write DEMO timings next to the report."""
    py = sys.executable
    source = os.path.join(args.workdir, "archives")
    store = os.path.join(args.workdir, "store")
    run_dir = os.path.join(args.workdir, "run")
    eval_json = os.path.join(args.out, "eval_val_10view.json")
    os.makedirs(args.out, exist_ok=True)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    seconds = {}
    seconds["generate"] = run([py, os.path.join(here, "data_prep", "make_demo_imagenet.py"), "--out", source,
                               "--classes", str(args.classes), "--train-per-class", str(args.train_per_class),
                               "--val-per-class", str(args.val_per_class)])
    seconds["build"] = run([py, os.path.join(here, "data_prep", "build_imagenet.py"), "--source", source,
                            "--out", store, "--workers", str(args.workers)])
    epochs = [] if args.epochs is None else ["--epochs", str(args.epochs)]
    # --auto-resume: re-running the demo after an interruption continues the run instead of failing.
    seconds["train"] = run([py, "-m", "paper_repro.train", "--config", args.config, "--data", store,
                            "--gpus", args.gpus, "--out", run_dir, "--workers", str(args.workers),
                            "--auto-resume"] + epochs)
    seconds["evaluate"] = run([py, "-m", "paper_repro.evaluate", "--data", store, "--split", "val",
                               "--checkpoint", os.path.join(run_dir, "checkpoint.pt"), "--gpus", args.gpus,
                               "--views", "10", "--json", eval_json, "--workers", str(args.workers)])
    seconds["report"] = run([py, "-m", "paper_repro.report", "--run", run_dir, "--eval", eval_json,
                             "--data", store, "--out", args.out])
    seconds["total"] = sum(seconds.values())
    with open(eval_json) as f:
        ev = json.load(f)
    summary = {"seconds": {k: round(v, 1) for k, v in seconds.items()}, "cpus": os.cpu_count(),
               "top1_error": ev["top1_error"], "top5_error": ev["top5_error"], "images": ev["images"],
               "chance_top1_error": 1 - 1 / args.classes, "config": vars(args)}
    from paper_repro.checkpoint import atomic_write_json

    atomic_write_json(os.path.join(args.out, "demo_summary.json"), summary)
    print(f"\ndemo done in {seconds['total']:.0f} s: ten-view val top-1 error {ev['top1_error']:.3f} "
          f"(chance {1 - 1 / args.classes:.3f}), top-5 {ev['top5_error']:.3f}; report: "
          f"{os.path.join(args.out, 'report.md')}")
    return summary


if __name__ == "__main__":
    main(get_args_parser().parse_args())
