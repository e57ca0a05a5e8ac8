"""python -m paper_repro.demo: the whole pipeline on a generated ILSVRC-shaped data set, no download.

generate archives -> build the 256x256 store -> train a narrow two-column net -> ten-view
evaluation -> report. Every stage runs through the same command line a user would type, so
the demo tests the product, and each command is printed before it runs. Interrupted, the same
command continues where it stopped (the training resumes from its checkpoint); run again after it
finished, it only says where its report is (OUT/demo_summary.json marks a finished demo).
"""
import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time

from paper_repro.core import cli
from paper_repro.core.atomic import atomic_write_json
from paper_repro.core.devices import choose_devices, default_spec

PROG = "paper_repro.demo"
SUMMARY = "demo_summary.json"  # written last: its presence, with the same settings, means this demo is done
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(stage, cmd):
    """Print `cmd`, run it; return its wall time in seconds, or raise the failure as one clear line."""
    print("\n$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    start = time.perf_counter()
    # Ctrl-C reaches the stage too (same process group); the demo waits for it to save and exit instead of
    # killing it, which is what subprocess.run does on KeyboardInterrupt.
    interrupted = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        status = subprocess.Popen(cmd).wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted or status in (cli.INTERRUPTED, -signal.SIGINT):
        raise cli.Interrupted(f"during {stage}; run the same demo command again to continue where it stopped")
    if status != 0:
        raise cli.RunFailed(f"the {stage} stage failed (exit status {status}; its message is above)")
    return time.perf_counter() - start


def get_args_parser():
    """The demo's command line: where to work, where the report goes, and how big the demo is."""
    p = argparse.ArgumentParser(prog="python -m paper_repro.demo", description=__doc__,
                                formatter_class=cli.HelpFormatter)
    p.add_argument("--out", default=os.path.join("demo_work", "report"),
                   help="where the report (report.md + figures + demo_summary.json) goes (default: %(default)s)")
    p.add_argument("--workdir", default="demo_work",
                   help="scratch: generated archives, store, run folder (default: %(default)s)")
    p.add_argument("--classes", type=int, default=10, help="classes in the generated data set (default: %(default)s)")
    p.add_argument("--train-per-class", type=int, default=100,
                   help="generated training images per class (default: %(default)s)")
    p.add_argument("--val-per-class", type=int, default=20,
                   help="generated validation images per class (default: %(default)s)")
    p.add_argument("--config", default="demo_cpu",
                   help="training config (paper_repro/configs/): a 1/4-width net with the init that lets it learn "
                        "(default: %(default)s)")
    p.add_argument("--epochs", type=int, default=None, help="override the config's epochs (default: the config's 10)")
    p.add_argument("--workers", type=int, default=2,
                   help="decoding processes for build, train and evaluate (default: %(default)s)")
    p.add_argument("--gpus", default=None,
                   help="the --gpus spec passed to train and evaluate (their --help describes it), used as given "
                        "or refused before any work starts. Without it each takes the layout for what this machine "
                        "has: '0,1' with two or more GPUs, '0' with one; with none, train 'cpu,cpu' (on the CPU the "
                        "two-column layout trains the faster) and evaluate 'cpu'. The first line says which")
    return p


def _check(args):
    """Refuse bad settings before any work is done; return train's devices and how they were chosen."""
    chosen = cli.checked(choose_devices, args.gpus, "cpu,cpu")
    for flag, value in (("--classes", args.classes), ("--train-per-class", args.train_per_class),
                        ("--val-per-class", args.val_per_class)):
        if value < 1 or (flag == "--classes" and value < 2):
            raise cli.UsageError(f"{flag} {value}: must be at least {2 if flag == '--classes' else 1}")
    if args.workers < 0:
        raise cli.UsageError(f"--workers {args.workers}: must be >= 0")
    for flag, path in (("--out", args.out), ("--workdir", args.workdir)):
        if os.path.exists(path) and not os.path.isdir(path):
            raise cli.UsageError(f"{flag} {path}: exists and is not a folder; choose a folder path")
    return chosen


def finished(args):
    """The summary of a demo that finished in args.out with the same settings, or None."""
    try:
        with open(os.path.join(args.out, SUMMARY)) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return None
    same = summary.get("config") == vars(args) and os.path.isfile(os.path.join(args.out, "report.md"))
    return summary if same else None


def _errors(summary, out):
    return (f"ten-view val top-1 error {summary['top1_error']:.3f} (chance {summary['chance_top1_error']:.3f}), "
            f"top-5 {summary['top5_error']:.3f}; report: {os.path.join(out, 'report.md')}")


def main(args):
    """Run the five stages; write the timings and errors next to the report. A finished demo is not run again."""
    devices, chosen = _check(args)
    summary = finished(args)
    if summary is not None:
        print(f"demo already done with these settings ({os.path.join(args.out, SUMMARY)}; it took "
              f"{summary['seconds']['total']:.0f} s): {_errors(summary, args.out)}. To run it again, delete "
              f"{args.out} or pass another --out")
        return summary
    print(f"demo: generate a data set of {args.classes} classes, build its store, train on {', '.join(devices)} "
          f"({chosen}), evaluate, report into {args.out}; scratch files in {args.workdir}", flush=True)
    py = sys.executable
    source = os.path.join(args.workdir, "archives")
    store = os.path.join(args.workdir, "store")
    run_dir = os.path.join(args.workdir, "run")
    eval_json = os.path.join(args.out, "eval_val_10view.json")
    workers = ["--workers", str(args.workers)]
    seconds = {}
    seconds["generate"] = run("generate", [
        py, os.path.join(HERE, "data_prep", "make_demo_imagenet.py"), "--out", source, "--classes", str(args.classes),
        "--train-per-class", str(args.train_per_class), "--val-per-class", str(args.val_per_class)])
    seconds["build"] = run("build", [py, os.path.join(HERE, "data_prep", "build_imagenet.py"), "--source", source,
                                     "--out", store, *workers])
    epochs = [] if args.epochs is None else ["--epochs", str(args.epochs)]
    # Train gets the spec the rule chose, which overrides the config's own (demo_cpu's cpu,cpu); evaluate, given
    # none, takes its own default by the same rule.
    gpus = [] if args.gpus is None else ["--gpus", args.gpus]
    train_gpus = ["--gpus", args.gpus if args.gpus is not None else default_spec("cpu,cpu")]
    # --auto-resume: re-running the demo after an interruption continues the run instead of failing.
    seconds["train"] = run("train", [py, "-m", "paper_repro.train", "--config", args.config, "--data", store,
                                     *train_gpus, "--out", run_dir, *workers, "--auto-resume", *epochs])
    seconds["evaluate"] = run("evaluate", [
        py, "-m", "paper_repro.evaluate", "--data", store, "--split", "val", "--checkpoint",
        os.path.join(run_dir, "checkpoint.pt"), *gpus, "--views", "10", "--json", eval_json, *workers])
    seconds["report"] = run("report", [py, "-m", "paper_repro.report", "--run", run_dir, "--eval", eval_json,
                                       "--data", store, "--out", args.out])
    seconds["total"] = sum(seconds.values())
    with open(eval_json) as f:
        ev = json.load(f)
    chance = 1 - 1 / args.classes
    summary = {"seconds": {k: round(v, 1) for k, v in seconds.items()}, "cpus": os.cpu_count(),
               "top1_error": ev["top1_error"], "top5_error": ev["top5_error"], "images": ev["images"],
               "chance_top1_error": chance, "config": vars(args)}
    atomic_write_json(os.path.join(args.out, SUMMARY), summary)
    print(f"\ndemo done in {seconds['total']:.0f} s: {_errors(summary, args.out)}")
    return summary


if __name__ == "__main__":
    cli.run(PROG, lambda: main(get_args_parser().parse_args()))
    cli.leave()
