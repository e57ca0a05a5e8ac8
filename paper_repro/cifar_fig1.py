"""python -m paper_repro.cifar_fig1: Figure 1 from ReLU and tanh runs (epochs to 25 % training error).

Several runs per unit (one per learning rate) are a learning-rate search: each unit's fastest run is
the one drawn and compared, as the paper chose each net's rate to make it train as fast as possible.
"""
import argparse

from paper_repro.core.atomic import atomic_write_json
from paper_repro.core.cli import checked, leave, run
from paper_repro.evaluation.cifar_fig1 import PAPER_RATIO, epochs_to, fastest, plot, read_errors, read_lr, summary

PROG = "python -m paper_repro.cifar_fig1"


def get_args_parser():
    """The command-line options."""
    p = argparse.ArgumentParser(prog=PROG, description="Figure 1 of the paper from two training runs "
                                "(--config cifar10_fig1_relu and cifar10_fig1_tanh): the epochs each needs to reach "
                                "25 % training error, their ratio, and the figure.")
    p.add_argument("--relu", required=True, nargs="+", metavar="RUN",
                   help="run folder(s) of the ReLU net (log.jsonl and config.json are read); several: one per "
                        "learning rate, the fastest to the target is compared")
    p.add_argument("--tanh", required=True, nargs="+", metavar="RUN", help="run folder(s) of the tanh net")
    p.add_argument("--target", type=float, default=0.25, help="training error to reach (default: %(default)s)")
    p.add_argument("--plot", default=None, help="write the figure to this PNG (default: not drawn)")
    p.add_argument("--note", default="", help="a line above the figure, e.g. the data set (default: none)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file (default: print only)")
    return p


def _line(name, s, target):
    if s["epochs_to_target"] is None:
        return (f"{name}: did not reach {100 * target:g} % training error in {s['epochs']} epochs "
                f"(lowest {s['lowest']:.3f})")
    at = f" (lr {s['lr']:g})" if s.get("lr") else ""
    return f"{name}: {100 * target:g} % training error after epoch {s['epochs_to_target']}{at}"


def _pick(name, runs, target):
    """The unit's fastest run's errors; print the search when there is one."""
    errors = [checked(read_errors, run) for run in runs]
    found = [{"run": run, "lr": read_lr(run), "epochs_to_target": epochs_to(e, target)} for run, e in zip(runs, errors)]
    best = fastest(errors, target)
    if len(runs) > 1:
        for i, (f, e) in enumerate(zip(found, errors)):
            reached = f["epochs_to_target"]
            what = (f"{100 * target:g} % after epoch {reached}" if reached else
                    f"not {100 * target:g} % in {len(e)} epochs (lowest {min(v for _, v in e):.3f})")
            print(f"{name} lr {f['lr']}: {what}  ({f['run']}){'  <- fastest' * (i == best)}")
    return errors[best], {"runs": found, "chosen": runs[best], "lr": found[best]["lr"]}


def main(argv=None):
    """Read the logs, print epochs to the target and the ratio, write --plot and --json; return the numbers."""
    args = get_args_parser().parse_args(argv)
    (relu, relu_search), (tanh, tanh_search) = _pick("ReLU", args.relu, args.target), _pick("tanh", args.tanh, args.target)
    result = summary(relu, tanh, args.target)
    result["relu"].update(relu_search)
    result["tanh"].update(tanh_search)
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
    leave()
