"""The classes in words: the 1000 ILSVRC-2012 wnids' short names and WordNet words, shipped as data.

ilsvrc2012_classes.tsv (beside this file; header `wnid, name, words`, then one row per class sorted by
wnid) was written by data_prep/make_class_table.py from one ILSVRC-2012 photo per class named
`<wnid>_<short name>.JPEG` and WordNet's words.txt. Its short names are the ones torchvision's
ImageNet weights list, except two that ILSVRC-2012 itself repeats: crane (the bird n02012849 and the
machine n03126707) and maillot (n03710637, n03710721); short_names keeps names unique within a store.
A store's own words (a devkit's, Tiny ImageNet's words.txt) win over the table; the table fills in
classes that have none (extracted class folders, stores built before it).
"""
import functools
import os

TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ilsvrc2012_classes.tsv")
HEADER = ("wnid", "name", "words")


@functools.lru_cache(maxsize=1)
def ilsvrc2012_classes():
    """{wnid: (short name, WordNet words)} of the 1000 ILSVRC-2012 classes, read from the shipped table."""
    table = {}
    with open(TABLE, encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if len(fields) == 3 and tuple(fields) != HEADER:
                table[fields[0]] = (fields[1], fields[2])
    return table


def _known(word, cls):
    """True if `word` names class `cls` in words (not missing, not just its id)."""
    return isinstance(word, str) and word.strip() != "" and word.strip() != cls


def class_words(classes, words=None):
    """The words of each class: `words`' entry where it says more than the id, else the table's, else the id."""
    words = list(words) if words and len(words) == len(classes) else [None] * len(classes)
    table = ilsvrc2012_classes()
    return [w if _known(w, c) else table[c][1] if c in table else c for c, w in zip(classes, words)]


def names_known(classes, words=None):
    """True if `words` or the table names at least one of `classes` in words."""
    table = ilsvrc2012_classes()
    return any(c in table for c in classes) or any(_known(w, c) for c, w in zip(classes, words or ()))


def short_names(classes, words=None):
    """One short name per class, unique within `classes`: the table's name of an ILSVRC-2012 wnid where the
    store's words do not say more, else the first of its words ("goldfish, Carassius auratus" -> "goldfish"),
    else the id; a name two classes share gets its id in brackets ("crane (n02012849)")."""
    table = ilsvrc2012_classes()
    names = []
    for c, w in zip(classes, class_words(classes, words)):
        first = w.split(",")[0].strip()
        names.append(table[c][0] if c in table and w == table[c][1] else first or c)
    seen = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    return [f"{n} ({c})" if seen[n] > 1 and n != c else n for c, n in zip(classes, names)]


def manifest_entries(classes, words):
    """{"class_words", "class_names"} a build records: the table fills in words the source lacks; no names where
    nothing names the classes (the ids stay the words, as before)."""
    if not names_known(classes, words):
        return {"class_words": list(words) if words else list(classes)}
    return {"class_words": class_words(classes, words), "class_names": short_names(classes, words)}
