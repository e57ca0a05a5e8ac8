"""Which layout a source folder holds, told by its files, and the plan of what the build reads there.

    ilsvrc-archives   the official ILSVRC-2012/2010 archives (ilsvrc_sources.py)
    tiny-imagenet     the extracted Tiny ImageNet layout, found by its wnids.txt (tiny_imagenet.py)
    folders           extracted class folders DIR/train/<wnid>/*, DIR/val/<wnid>/* (ilsvrc_sources.py)
    cifar-python      CIFAR-10's python archive or its extracted batches (cifar_sources.py)
    cifar-folders     DIR/train/<class>/*, DIR/test/<class>/* of 32x32 images, no val/ (cifar_sources.py)
"""
import os

from data_prep.cifar_sources import is_cifar_folders, is_cifar_python, plan_cifar_folders, plan_cifar_python
from data_prep.ilsvrc_sources import ARCHIVES, archives_present, layout_text, plan_archives, plan_folders
from data_prep.shard_tasks import SourceError
from data_prep.tiny_imagenet import is_tiny_imagenet, plan_tiny_imagenet

SOURCE_FORMATS = ("ilsvrc-archives", "folders", "tiny-imagenet", "cifar-python", "cifar-folders")


def detect_format(source, year):
    """The layout of `source` (one of SOURCE_FORMATS), from which files are there; SourceError if none."""
    if not os.path.isdir(source):
        raise SourceError(f"source folder {source} does not exist\n{layout_text(source, year)}")
    if archives_present(source, year):
        return "ilsvrc-archives"
    if is_tiny_imagenet(source):
        return "tiny-imagenet"
    if is_cifar_python(source):
        return "cifar-python"
    if is_cifar_folders(source):
        return "cifar-folders"
    if os.path.isdir(os.path.join(source, "train")):
        return "folders"
    hint = [os.path.join(source, d) for d in sorted(os.listdir(source))
            if is_tiny_imagenet(os.path.join(source, d))]
    raise SourceError(f"missing {os.path.join(source, ARCHIVES[year]['train'])}\n{layout_text(source, year)}\n"
                      f"or the Tiny ImageNet layout {source}/wnids.txt, words.txt, train/, val/\n"
                      f"or CIFAR-10: cifar-10-python.tar.gz, cifar-10-batches-py/, or train/ and test/ of 32x32 images"
                      + (f"\n{hint[0]} holds the Tiny ImageNet layout: pass --source {hint[0]}" if hint else ""))


def plan(source, source_format, year):
    """The SourcePlan of `source` in its `source_format`; a SourceError if it has fewer than two classes."""
    source_plan = _plan_layout(source, source_format, year)
    if len(source_plan.classes) < 2:  # one class: every answer right, nothing learnt, a store not worth building
        raise SourceError(f"{source}: its training set has one class ({source_plan.classes[0]}); a classifier needs at "
                          f"least two: put each class's training images in a folder of its own beside it")
    return source_plan


def _plan_layout(source, source_format, year):
    if source_format == "ilsvrc-archives":
        return plan_archives(source, year)
    if source_format == "tiny-imagenet":
        return plan_tiny_imagenet(source)
    if source_format == "cifar-python":
        return plan_cifar_python(source)
    if source_format == "cifar-folders":
        return plan_cifar_folders(source)
    return plan_folders(source)
