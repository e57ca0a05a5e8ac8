"""Where the ILSVRC images are: the official archives (2012, 2010) or the extracted folders.

plan_archives(source, year) and plan_folders(source) return a SourcePlan: the classes (sorted
wnids; label = index), their words, and the shard tasks (shard_tasks.py) that stream each
shard's files straight out of the archives or the folders.
"""
import io
import os
import re
import tarfile

import numpy as np
from scipy.io import loadmat

from data_prep.shard_tasks import (ClassTarShard, FileShard, FlatTarShard, SourceError, SourceFile, SourcePlan,
                                   TarMember, held_out_shards, list_regular_files, member_problem)

# A file make_demo_imagenet.py leaves at the top of a generated data set (never in real ILSVRC data).
DEMO_MARK = "GENERATED_DEMO_DATASET.txt"

# The official file names; make_demo_imagenet.py writes its generated sets with these too.
ARCHIVES = {
    2012: {
        "train": "ILSVRC2012_img_train.tar",
        "val": "ILSVRC2012_img_val.tar",
        "devkit": "ILSVRC2012_devkit_t12.tar.gz",
        "devkit_dir": "ILSVRC2012_devkit_t12",
        "meta": "ILSVRC2012_devkit_t12/data/meta.mat",
        "val_gt": "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt",
        "id_field": "ILSVRC2012_ID",
        "val_name": "ILSVRC2012_val_%08d.JPEG",
    },
    2010: {
        "train": "ILSVRC2010_images_train.tar",
        "val": "ILSVRC2010_images_val.tar",
        "test": "ILSVRC2010_images_test.tar",
        "test_gt": "ILSVRC2010_test_ground_truth.txt",
        "patch": "patch_images.tar",  # optional: fixed versions of some blank/broken images
        "devkit": "ILSVRC2010_devkit-1.0.tar.gz",
        "devkit_dir": "devkit-1.0",
        "meta": "devkit-1.0/data/meta.mat",
        "val_gt": "devkit-1.0/data/ILSVRC2010_validation_ground_truth.txt",
        "id_field": "ILSVRC2010_ID",
        "val_name": "ILSVRC2010_val_%08d.JPEG",
        "test_name": "ILSVRC2010_test_%08d.JPEG",
    },
}
_IMAGE_ARCHIVES = ("train", "val", "devkit", "test")


def _list_tar(path):
    """[(member, problem or None)] for every member of an uncompressed tar, reading headers only."""
    try:
        with tarfile.open(path, "r:") as tf:
            return [(m, member_problem(m)) for m in tf]
    except tarfile.ReadError as e:
        raise SourceError(f"{path} is not a readable uncompressed tar archive ({e}); the official "
                          f"ILSVRC image archives are plain .tar files")


def _read_devkit(devkit_path, year):
    """(classes sorted, their words, devkit ID -> wnid, {member name: bytes}) from the devkit tar.gz."""
    names = ARCHIVES[year]
    wanted = {names["meta"], names["val_gt"]}
    found = {}
    try:
        with tarfile.open(devkit_path, "r:*") as tf:
            for m in tf:
                if m.name in wanted and m.isreg():
                    found[m.name] = tf.extractfile(m).read()
    except (tarfile.ReadError, OSError, EOFError) as e:
        raise SourceError(f"devkit {devkit_path} is not a readable tar.gz archive ({e})")
    for name in sorted(wanted - set(found)):
        raise SourceError(f"devkit {devkit_path} has no member {name} (the ILSVRC-{year} devkit "
                          f"layout has {names['meta']} and {names['val_gt']})")
    synsets = loadmat(io.BytesIO(found[names["meta"]]), squeeze_me=True)["synsets"]
    fields = synsets.dtype.names
    id_field = names["id_field"]
    if id_field not in fields:
        other = [f for f in fields if re.match(r"ILSVRC\d{4}_ID", f)]
        raise SourceError(f"devkit {devkit_path}: meta.mat has {other or fields} but no {id_field}; "
                          f"is this the ILSVRC-{year} devkit? (check --year)")
    id_to_wnid, words = {}, {}
    for s in np.atleast_1d(synsets):
        if int(s["num_children"]) == 0:  # leaf synsets are the 1000 classes
            id_to_wnid[int(s[id_field])] = str(s["WNID"])
            words[str(s["WNID"])] = str(s["words"]) if "words" in fields else str(s["WNID"])
    classes = sorted(id_to_wnid.values())
    return classes, [words[w] for w in classes], id_to_wnid, found


def _ground_truth(data, id_to_wnid, class_index, what):
    """Labels (sorted-wnid index) from a ground-truth file of devkit IDs, one per line."""
    labels = []
    for n, line in enumerate(data.decode().split(), 1):
        k = int(line)
        if k not in id_to_wnid:
            raise SourceError(f"{what} line {n}: devkit ID {k} is not a leaf synset of meta.mat")
        labels.append(class_index[id_to_wnid[k]])
    return labels


def layout_text(source, year):
    """What an ILSVRC source folder should hold (the tail of every layout error)."""
    names = ARCHIVES[year]
    lines = [f"expected the ILSVRC-{year} archives in {source}:"]
    for key in ("train", "val", "devkit", "test", "test_gt", "patch"):
        if key in names:
            opt = {"test": " (optional, with the next)", "patch": " (optional)"}.get(key, "")
            lines.append(f"  {names[key]}{opt}")
    lines.append(f"or the extracted layout {source}/train/<wnid>/*.JPEG and {source}/val/<wnid>/*.JPEG")
    return "\n".join(lines)


def archives_present(source, year):
    """The ILSVRC-`year` archive names found in `source`; SourceError if only the other year's are there."""
    def present(y):
        return [v for k, v in ARCHIVES[y].items() if k in _IMAGE_ARCHIVES and os.path.exists(os.path.join(source, v))]
    this = present(year)
    other_year = 2010 if year == 2012 else 2012
    other = present(other_year)
    if other and not this:
        raise SourceError(f"--year {year} but {source} holds the ILSVRC-{other_year} files "
                          f"({', '.join(other)}); pass --year {other_year}")
    return this


def _patches(source, names, skipped):
    """(patch tar path or None, {split: {file name: (offset, size)}}) of the 2010 patch_images.tar."""
    patches = {"train": {}, "val": {}, "test": {}}
    if "patch" not in names or not os.path.isfile(os.path.join(source, names["patch"])):
        return None, patches
    patch_path = os.path.join(source, names["patch"])
    for m, problem in _list_tar(patch_path):
        if problem is None:  # members <...>/<train|val|test>/<file name>
            parts = m.name.split("/")
            if len(parts) >= 2 and parts[-2] in patches:
                patches[parts[-2]][parts[-1]] = (m.offset_data, m.size)
        elif problem != "directory":
            skipped.append({"file": f"{names['patch']}:{m.name}", "reason": problem})
    return patch_path, patches


def plan_archives(source, year):
    """The SourcePlan of the official archives of `year` in `source`."""
    names = ARCHIVES[year]
    path = {k: os.path.join(source, names[k]) for k in ("train", "val", "test", "devkit", "test_gt")
            if k in names}
    for key in ("train", "val", "devkit"):
        if not os.path.isfile(path[key]):
            raise SourceError(f"missing {path[key]}\n{layout_text(source, year)}")
    if "test" in path and os.path.isfile(path["test"]) and not os.path.isfile(path["test_gt"]):
        raise SourceError(f"missing {path['test_gt']} (the ground truth of {names['test']})\n"
                          f"{layout_text(source, year)}")
    classes, words, id_to_wnid, dev = _read_devkit(path["devkit"], year)
    class_index = {w: i for i, w in enumerate(classes)}
    skipped, tasks = [], []
    patch_path, patches = _patches(source, names, skipped)

    for m, problem in sorted(_list_tar(path["train"]), key=lambda t: t[0].name):
        if problem == "directory":
            continue
        wnid = os.path.basename(m.name)[:-4] if m.name.endswith(".tar") else None
        if problem is None and wnid not in class_index:
            problem = "not a <wnid>.tar of a devkit class: not used"
        if problem:
            skipped.append({"file": f"{names['train']}:{m.name}", "reason": problem})
            continue
        tasks.append(ClassTarShard("train", len(tasks), path["train"], names["train"], m.name, m.offset_data,
                                   m.size, class_index[wnid], patch_path, patches["train"]))

    def held_out(split, gt_labels):
        members = []
        for m, problem in _list_tar(path[split]):
            where = f"{names[split]}:{m.name}"
            if problem == "directory":
                continue
            if problem:
                skipped.append({"file": where, "reason": problem})
                continue
            num = re.search(r"_(\d+)\.[A-Za-z]+$", m.name)
            if not num or not 1 <= int(num.group(1)) <= len(gt_labels):
                skipped.append({"file": where, "reason": "file name has no ground-truth entry: not used"})
                continue
            name = os.path.basename(m.name)
            members.append(TarMember(name, where, gt_labels[int(num.group(1)) - 1], m.offset_data, m.size,
                                     patches[split].get(name)))
        return held_out_shards(split, members,
                               lambda s, k, chunk: FlatTarShard(s, k, path[split], chunk, patch_path))

    tasks += held_out("val", _ground_truth(dev[names["val_gt"]], id_to_wnid, class_index, names["val_gt"]))
    if "test" in path and os.path.isfile(path["test"]):
        with open(path["test_gt"], "rb") as f:
            tasks += held_out("test", _ground_truth(f.read(), id_to_wnid, class_index, names["test_gt"]))
    return SourcePlan("ilsvrc-archives", classes, words, tasks, skipped)


def _scan_class_dirs(folder):
    """({wnid: [(name, path)]}, skipped) of a split folder DIR/<split>/<wnid>/* (links to folders and files followed)."""
    out, skipped = {}, []
    for d in sorted(os.scandir(folder), key=lambda e: e.name):
        if d.is_dir():
            out[d.name], sk = list_regular_files(d.path)
            skipped += sk
    return out, skipped


def _no_image(folder, found, skipped):
    """The one line for a split folder whose class folders hold no image file, or None."""
    if any(found.values()):
        return None
    unusable = [s for s in skipped if s["file"].startswith(folder + os.sep)]
    why = f"; {len(unusable)} entries there are not usable files, e.g. {unusable[0]['file']}: " \
          f"{unusable[0]['reason']}" if unusable else ""
    return (f"{folder} has no image: its {len(found)} class folder{'s' if len(found) != 1 else ''} hold no file"
            f"{why}. Put the images (or symbolic links to them) in {folder}/<wnid>/")


def plan_folders(source):
    """The SourcePlan of the extracted layout DIR/train/<wnid>/*, DIR/val/<wnid>/* [, DIR/test/<wnid>/*]."""
    expected = f"expected the extracted layout {source}/train/<wnid>/*.JPEG and {source}/val/<wnid>/*.JPEG"
    train, skipped = _scan_class_dirs(os.path.join(source, "train"))
    classes = sorted(train)
    if not classes:
        raise SourceError(f"{source}/train has no <wnid> class folders\n{expected}")
    problem = _no_image(os.path.join(source, "train"), train, skipped)
    if problem:
        raise SourceError(problem)
    empty = [w for w in classes if not train[w]]
    if empty:
        folder = os.path.join(source, "train", empty[0])
        raise SourceError(f"{folder} has no image (class {empty[0]}; {len(empty)} of the {len(classes)} training "
                          f"class folders {'is' if len(empty) == 1 else 'are'} empty): every class needs training "
                          f"images")
    class_index = {w: i for i, w in enumerate(classes)}
    tasks = [FileShard("train", k, [SourceFile(n, p, k) for n, p in train[w]]) for k, w in enumerate(classes)]
    for split in ("val", "test"):
        folder = os.path.join(source, split)
        if not os.path.isdir(folder):
            if split == "val":
                raise SourceError(f"missing {folder}\n{expected}")
            continue
        found, sk = _scan_class_dirs(folder)
        skipped += sk
        problem = _no_image(folder, found, sk) if split == "val" else None
        if problem:
            raise SourceError(problem)
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise SourceError(f"{folder} has class folders that {source}/train lacks: "
                              f"{', '.join(unknown[:5])}")
        files = [SourceFile(n, p, class_index[w]) for w in found for n, p in found[w]]
        tasks += held_out_shards(split, files, FileShard)
    return SourcePlan("folders", classes, list(classes), tasks, skipped)
