"""python -m paper_repro.report: a run's results beside the paper's, its deviations, curves, Figures 3 and 4.

This file is the command; evaluation/run_report.py reads the run and writes the markdown.
"""
import argparse
import os

from paper_repro.core.cli import UsageError, checked, leave, run
from paper_repro.core.devices import choose_devices, help_text
from paper_repro.evaluation.run_report import PROG, read_eval, read_run, write_report
from paper_repro.nets.checkpoint import CHECKPOINT, load_checkpoint


def get_args_parser(add_help=True):
    """The command-line options of python -m paper_repro.report."""
    p = argparse.ArgumentParser(prog=PROG,
                                description="Write DIR/report.md (+ PNG figures) for a training run: results "
                                "beside the paper's, deviations from its recipe, curves, Figures 3 and 4.",
                                add_help=add_help)
    p.add_argument("--run", required=True, help="RUN folder written by python -m paper_repro.train (required)")
    p.add_argument("--eval", action="append", default=[], help="OUT.json from python -m paper_repro.evaluate "
                   "(repeatable; default: none, only the training log's centre-patch errors)")
    p.add_argument("--data", default=None, help="STORE (default: the run's config.json 'data')")
    p.add_argument("--out", required=True, help="folder for report.md and its figures (required)")
    p.add_argument("--gpus", default=None, help="devices for Figure 4's fc7 features, as for evaluate: "
                   + help_text("cpu"))
    p.add_argument("--queries", type=int, default=5, help="validation images in Figure 4 (default: %(default)s)")
    p.add_argument("--pool", type=int, default=5000,
                   help="training images searched for Figure 4's neighbours (default: %(default)s; the paper "
                   "searched all)")
    p.add_argument("--workers", type=int, default=0,
                   help="decoding worker processes for Figure 4; 0 decodes in this process (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars (default: shown)")
    return p


def check_args(args):
    """Raise UsageError naming the flag and its allowed values for the first value out of range."""
    for flag, value, least in (("--queries", args.queries, 1), ("--pool", args.pool, 1),
                               ("--workers", args.workers, 0)):
        if value < least:
            raise UsageError(f"{flag} {value}: must be an integer >= {least}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out}: is a file; pass a folder for report.md and its figures")


def read_inputs(args):
    """Check the flags and read the run folder and the --eval files: write_report's keyword arguments."""
    check_args(args)
    evals = [read_eval(p) for p in args.eval]
    config, log = read_run(args.run)
    ckpt_path = os.path.join(args.run, CHECKPOINT)
    ckpt = load_checkpoint(ckpt_path) if os.path.isfile(ckpt_path) else None
    devices, chosen = choose_devices(args.gpus, "cpu")  # after the run and its files: the data first
    print(f"report {args.run}: {len(log)} epoch{'s' if len(log) != 1 else ''} logged, {len(evals)} evaluation"
          f"{'s' if len(evals) != 1 else ''} | Figure 4 on {', '.join(devices)} ({chosen}) | into {args.out}",
          flush=True)
    return {"run": args.run, "config": config, "log": log, "ckpt": ckpt, "out": args.out, "evals": evals,
            "data": args.data, "devices": devices, "queries": args.queries, "pool": args.pool,
            "workers": args.workers, "progress": not args.no_progress}


def main(args):
    """Write the report; return its path. A bad flag, run folder, checkpoint or --eval file is a UsageError."""
    path = write_report(**checked(read_inputs, args))
    print(f"wrote {path}")
    return path


def cli(argv=None):
    """The command: parse the flags and write the report."""
    return main(get_args_parser().parse_args(argv))


if __name__ == "__main__":
    run(PROG, cli)
    leave()
