"""python -m paper_repro.bench {train,loader,eval,lrn}: our speed beside the baseline a user would run."""
import sys

from paper_repro.bench.command import PROG, get_args_parser, main
from paper_repro.core import cli

if __name__ == "__main__":
    cli.run(PROG, main, get_args_parser().parse_args(sys.argv[1:]))
    cli.leave()
