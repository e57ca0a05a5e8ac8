"""python -m paper_repro.cifar_fig1: Figure 1 from a ReLU run and a tanh run (epochs to 25 % training error)."""
import argparse

from paper_repro.core.atomic import atomic_write_json
from paper_repro.core.cli import checked, run
from paper_repro.evaluation.cifar_fig1 import PAPER_RATIO, plot, read_errors, summary

PROG = "python -m paper_repro.cifar_fig1"


def get_args_parser():
    """The command-line options."""
    p = argparse.ArgumentParser(prog=PROG, description="Figure 1 of the paper from two training runs "
                                "(--config cifar10_fig1_relu and cifar10_fig1_tanh): the epochs each needs to reach "
                                "25 % training error, their ratio, and the figure.")
    p.add_argument("--relu", required=True, help="RUN folder of the ReLU net (its log.jsonl is read)")
    p.add_argument("--tanh", required=True, help="RUN folder of the tanh net")
    p.add_argument("--target", type=float, default=0.25, help="training error to reach (default: %(default)s)")
    p.add_argument("--plot", default=None, help="write the figure to this PNG (default: not drawn)")
    p.add_argument("--note", default="", help="a line above the figure, e.g. the data set (default: none)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file (default: print only)")
    return p


def _line(name, s, target):
    if s["epochs_to_target"] is None:
        return (f"{name}: did not reach {100 * target:g} % training error in {s['epochs']} epochs "
                f"(lowest {s['lowest']:.3f})")
    return f"{name}: {100 * target:g} % training error after epoch {s['epochs_to_target']}"


def main(argv=None):
    """Read both logs, print epochs to the target and the ratio, write --plot and --json; return the numbers."""
    args = get_args_parser().parse_args(argv)
    relu, tanh = checked(read_errors, args.relu), checked(read_errors, args.tanh)
    result = summary(relu, tanh, args.target)
    print(_line("ReLU", result["relu"], args.target))
    print(_line("tanh", result["tanh"], args.target))
    ratio = "n/a (a run did not reach the target)" if result["ratio"] is None else f"{result['ratio']:.2f}"
    print(f"ratio tanh / ReLU: {ratio} (the paper: about {PAPER_RATIO})")
    if args.plot:
        plot(relu, tanh, args.target, args.plot, args.note)
    if args.json:
        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    run(PROG, main)
