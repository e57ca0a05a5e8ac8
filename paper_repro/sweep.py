"""python -m paper_repro.sweep: one table and one figure from many run folders (seeds pooled, differences).

This file is the command; evaluation/sweep.py groups and pools the runs, evaluation/sweep_figure.py draws.
"""
import argparse
import os
import shlex
import sys

from paper_repro.core.atomic import atomic_write, atomic_write_json
from paper_repro.core.cli import UsageError, leave, run
from paper_repro.evaluation.sweep import IGNORED, PROG, group_table, markdown, sweep
from paper_repro.evaluation.sweep_figure import plot_sweep

MD, PNG, JSON = "sweep.md", "sweep.png", "sweep.json"


def get_args_parser(add_help=True):
    """The command-line options of python -m paper_repro.sweep."""
    p = argparse.ArgumentParser(
        prog=PROG, add_help=add_help,
        description="Group training runs by their resolved settings (RUN/config.json without the seed, paths and "
        "how they ran), pool each group's seeds into mean and spread, give each group's difference from a "
        "reference group, and write DIR/sweep.md (the table), DIR/sweep.png (the figure) and DIR/sweep.json. "
        "A run's error is its ten-view val error (RUN/eval*.json from python -m paper_repro.evaluate --json, or "
        "the last line of RUN/log.jsonl from train --ten-view-every N) where that is of its last epoch, else the "
        "centre-patch val error of the last epoch of RUN/log.jsonl.",
        epilog="Ignored by default: " + ", ".join(IGNORED) + ".")
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN",
                   help="run folders written by python -m paper_repro.train (required)")
    p.add_argument("--reference", default=None, metavar="RUN",
                   help="a run of the reference group: every other group gets its difference from it (default: none, "
                   "no differences); added to --runs if not among them")
    p.add_argument("--ignore", action="append", default=[], metavar="KEY",
                   help="another config.json key to leave out of the grouping, e.g. epochs or model_config.width "
                   "(repeatable; default: only the keys listed below)")
    p.add_argument("--out", required=True, help="folder for sweep.md, sweep.png and sweep.json (required)")
    return p


def main(args, command=None):
    """Write the table, the figure and the JSON; print the table; return the path of sweep.md."""
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out}: is a file; pass a folder for sweep.md and its figure")
    result = sweep(args.runs, args.reference, args.ignore)
    os.makedirs(args.out, exist_ok=True)
    plot_sweep(result, os.path.join(args.out, PNG))
    md = markdown(result, PNG, command)
    path = os.path.join(args.out, MD)
    atomic_write(path, lambda f: f.write("\n".join(md)), mode="w")
    atomic_write_json(os.path.join(args.out, JSON), {k: result[k] for k in ("groups", "reference", "warnings")})
    for w in result["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print("\n".join(group_table(result)))
    print(f"wrote {path}, {os.path.join(args.out, PNG)}")
    return path


def cli(argv=None):
    """The command: parse the flags and write the sweep."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return main(get_args_parser().parse_args(argv), " ".join([PROG] + [shlex.quote(a) for a in argv]))


if __name__ == "__main__":
    run(PROG, cli)
    leave()
