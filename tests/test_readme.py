"""The README's commands are the ones the code accepts, and CI runs the README's test command."""
import importlib
import os
import re
import shlex

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md")).read()
BLOCKS = re.findall(r"```\n(.*?)```", README, flags=re.S)
# module or script in a README command -> the module whose get_args_parser() must accept it
PARSERS = {"paper_repro.train": "paper_repro.train", "paper_repro.evaluate": "paper_repro.evaluate",
           "paper_repro.report": "paper_repro.report", "paper_repro.demo": "paper_repro.demo",
           "paper_repro.bench": "paper_repro.bench.command", "data_prep/build_imagenet.py": "data_prep.build_imagenet",
           "paper_repro.sweep": "paper_repro.sweep", "data_prep/make_class_table.py": "data_prep.make_class_table"}


def test_readme_opens_with_install_and_demo_then_install_and_tests_which_ci_runs():
    assert README.index("```") < README.index("\n## "), "the two commands come before any section"
    first, second = BLOCKS[0].strip().splitlines()
    assert first == "pip install -e . && python -m paper_repro.demo"
    assert second == 'pip install -e ".[test]" && python -m pytest -q'
    ci = open(os.path.join(ROOT, ".ci", "run")).read().strip().splitlines()
    assert ci[-1] == second


def readme_commands():
    """(target, argv) for every command line in the README's code blocks that runs our code."""
    found = []
    for block in BLOCKS:
        for line in block.splitlines():
            line = line.split(" # ")[0].strip()
            words = shlex.split(line) if line else []
            for target in PARSERS:
                for i, w in enumerate(words):
                    if w == target and (target.endswith(".py") or words[i - 1] == "-m"):
                        argv = words[i + 1:]
                        found.append((target, argv[:argv.index("&&")] if "&&" in argv else argv))
    return found


@pytest.mark.parametrize("target, argv", readme_commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_every_readme_command_parses(target, argv):
    parser = importlib.import_module(PARSERS[target]).get_args_parser()
    parser.parse_args(argv)  # argparse exits (SystemExit) on an unknown flag or a missing argument


def test_readme_commands_cover_every_stage():
    targets = {t for t, _ in readme_commands()}
    assert targets >= {"paper_repro.train", "paper_repro.evaluate", "paper_repro.report", "paper_repro.demo",
                       "data_prep/build_imagenet.py"}


def test_every_flag_in_the_deviation_table_exists_in_train():
    flags = set()
    for heading in ("### Every deviation from both recipes is a flag", "## Faithfulness: the authors' code by default"):
        table = README[README.index(heading):]
        table = table[:table.index("\n\n", table.index("| flag |"))]
        flags |= set(re.findall(r"`(--[a-z0-9-]+)", table))
    known = {opt for a in importlib.import_module("paper_repro.train").get_args_parser()._actions
             for opt in a.option_strings}
    assert len(flags) > 15 and flags <= known, sorted(flags - known)
