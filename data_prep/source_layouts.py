"""Which layout a source folder holds, told by its files, and the plan of what the build reads there.

    ilsvrc-archives   the official ILSVRC-2012/2010 archives (ilsvrc_sources.py)
    tiny-imagenet     the extracted Tiny ImageNet layout, found by its wnids.txt (tiny_imagenet.py)
    folders           extracted class folders DIR/train/<wnid>/*, DIR/val/<wnid>/* (ilsvrc_sources.py)
"""
import os

from data_prep.ilsvrc_sources import ARCHIVES, archives_present, layout_text, plan_archives, plan_folders
from data_prep.shard_tasks import SourceError
from data_prep.tiny_imagenet import is_tiny_imagenet, plan_tiny_imagenet

SOURCE_FORMATS = ("ilsvrc-archives", "folders", "tiny-imagenet")


def detect_format(source, year):
    """The layout of `source` (one of SOURCE_FORMATS), from which files are there; SourceError if none."""
    if not os.path.isdir(source):
        raise SourceError(f"source folder {source} does not exist\n{layout_text(source, year)}")
    if archives_present(source, year):
        return "ilsvrc-archives"
    if is_tiny_imagenet(source):
        return "tiny-imagenet"
    if os.path.isdir(os.path.join(source, "train")):
        return "folders"
    hint = [os.path.join(source, d) for d in sorted(os.listdir(source))
            if is_tiny_imagenet(os.path.join(source, d))]
    raise SourceError(f"missing {os.path.join(source, ARCHIVES[year]['train'])}\n{layout_text(source, year)}\n"
                      f"or the Tiny ImageNet layout {source}/wnids.txt, words.txt, train/, val/"
                      + (f"\n{hint[0]} holds the Tiny ImageNet layout: pass --source {hint[0]}" if hint else ""))


def plan(source, source_format, year):
    """The SourcePlan of `source` in its `source_format`."""
    if source_format == "ilsvrc-archives":
        return plan_archives(source, year)
    if source_format == "tiny-imagenet":
        return plan_tiny_imagenet(source)
    return plan_folders(source)
