"""Write the shipped table of the 1000 ILSVRC-2012 classes in words (paper_repro/data/ilsvrc2012_classes.tsv).

python data_prep/make_class_table.py --samples DIR --words words.txt [--out TSV]

DIR holds one photo per ILSVRC-2012 class named `<wnid>_<short name>.JPEG` (underscores for spaces;
e.g. the imagenet-sample-images collection); words.txt is WordNet's `wnid <TAB> words` list (Tiny
ImageNet ships it). Each row of the table: wnid <TAB> short name <TAB> WordNet words, sorted by wnid.
The build refuses anything but exactly the 1000 ILSVRC-2012 wnids, each with WordNet words.
"""
import argparse
import os
import re
import sys

if __package__ in (None, ""):
    # `python data_prep/make_class_table.py` in a checkout that is not pip-installed: the package
    # imports below need the checkout on sys.path first (the one import allowed to follow code).
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paper_repro.core import cli  # noqa: E402
from paper_repro.core.atomic import atomic_write  # noqa: E402
from paper_repro.data.class_names import HEADER, TABLE  # noqa: E402
from paper_repro.data.store import ILSVRC2012_FIRST_LAST, ILSVRC_CLASSES  # noqa: E402

PROG = "python data_prep/make_class_table.py"
SAMPLE = re.compile(r"^(n\d{8})_(.+)\.JPEG$")


def read_samples(folder):
    """{wnid: short name} from the sample file names `<wnid>_<name>.JPEG` in `folder`."""
    names = {}
    for f in sorted(os.listdir(folder)):
        m = SAMPLE.match(f)
        if m:
            if m.group(1) in names:
                raise ValueError(f"{folder}: two sample photos for {m.group(1)}; keep one per class")
            names[m.group(1)] = m.group(2).replace("_", " ")
    return names


def read_words(path):
    """{wnid: WordNet words} from a `wnid <TAB> words` file."""
    words = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 2:
                raise ValueError(f"{path} line {n}: expected `wnid<TAB>words`, got {line.strip()[:60]!r}")
            words[fields[0].strip()] = fields[1].strip()
    return words


def table_rows(names, words):
    """Rows (wnid, short name, words) of the 1000 classes, or a ValueError saying what is missing."""
    wnids = sorted(names)
    if len(wnids) != ILSVRC_CLASSES or (wnids[0], wnids[-1]) != ILSVRC2012_FIRST_LAST:
        raise ValueError(f"found {len(wnids)} sample wnids ({wnids[0] if wnids else '-'} .. "
                         f"{wnids[-1] if wnids else '-'}); ILSVRC-2012 has {ILSVRC_CLASSES}, "
                         f"{ILSVRC2012_FIRST_LAST[0]} .. {ILSVRC2012_FIRST_LAST[1]}")
    missing = [w for w in wnids if w not in words]
    if missing:
        raise ValueError(f"words.txt has no words for {len(missing)} wnids: {', '.join(missing[:5])}")
    return [(w, names[w], words[w]) for w in wnids]


def get_args_parser():
    """The command-line options."""
    p = argparse.ArgumentParser(prog=PROG, description="Write the table of the 1000 ILSVRC-2012 classes in words.")
    p.add_argument("--samples", required=True, help="folder of <wnid>_<short name>.JPEG, one per class (required)")
    p.add_argument("--words", required=True, help="WordNet's words.txt: wnid<TAB>words (required)")
    p.add_argument("--out", default=TABLE, help="the table to write (default: the package's, %(default)s)")
    return p


def main(argv=None):
    """Read the samples and the words, check the 1000 classes, write the table."""
    args = get_args_parser().parse_args(argv)
    for flag, path, isdir in (("--samples", args.samples, True), ("--words", args.words, False)):
        if not (os.path.isdir(path) if isdir else os.path.isfile(path)):
            raise cli.UsageError(f"{flag} {path}: no such {'folder' if isdir else 'file'}")
    rows = cli.checked(table_rows, cli.checked(read_samples, args.samples), cli.checked(read_words, args.words))
    text = "\t".join(HEADER) + "\n" + "".join("\t".join(r) + "\n" for r in rows)
    atomic_write(args.out, lambda f: f.write(text), mode="w")
    print(f"wrote {args.out}: {len(rows)} classes")


if __name__ == "__main__":
    cli.run(PROG, main)
