"""Where the ILSVRC images are: the official archives (2012, 2010) or the extracted folders.

plan(source, year) finds the layout and returns the classes (sorted wnids; label = index) and
the shard tasks; iter_task_images(task) streams one shard's files straight out of the archives
(an inner class tar is read through a window on the outer tar: nothing is extracted, no member
path ever touches the filesystem; absolute/'..' names, links and devices are reported, not used).
"""
import io
import os
import re
import stat
import tarfile

import numpy as np

from data_prep.image_recipe import SkipImage

# A file make_demo_imagenet.py leaves at the top of a generated data set (never in real ILSVRC data).
DEMO_MARK = "GENERATED_DEMO_DATASET.txt"
HELD_OUT_SHARD = 1000       # val/test images per shard (train: one shard per class)

ARCHIVES = {
    2012: {
        "train": "ILSVRC2012_img_train.tar",
        "val": "ILSVRC2012_img_val.tar",
        "devkit": "ILSVRC2012_devkit_t12.tar.gz",
        "meta": "ILSVRC2012_devkit_t12/data/meta.mat",
        "val_gt": "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt",
        "id_field": "ILSVRC2012_ID",
    },
    2010: {
        "train": "ILSVRC2010_images_train.tar",
        "val": "ILSVRC2010_images_val.tar",
        "test": "ILSVRC2010_images_test.tar",
        "test_gt": "ILSVRC2010_test_ground_truth.txt",
        "patch": "patch_images.tar",  # optional: fixed versions of some blank/broken images
        "devkit": "ILSVRC2010_devkit-1.0.tar.gz",
        "meta": "devkit-1.0/data/meta.mat",
        "val_gt": "devkit-1.0/data/ILSVRC2010_validation_ground_truth.txt",
        "id_field": "ILSVRC2010_ID",
    },
}


class SourceError(Exception):
    """The source folder does not hold what the build needs (message says what and where)."""


def unsafe_member_name(name):
    """True for archive member names that are absolute or contain '..' (they are never used)."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) is not None or ".." in parts


def _member_problem(m):
    """Why a tar member cannot be an image (None if it is a safe regular file)."""
    if unsafe_member_name(m.name):
        return "unsafe path in archive (absolute or '..'): not used"
    if m.isdir():
        return "directory"
    if not m.isreg() or m.issparse():
        kind = ("symlink" if m.issym() else "hard link" if m.islnk() else
                "device" if (m.ischr() or m.isblk()) else "fifo" if m.isfifo() else "special member")
        return f"not a regular file ({kind}): not used"
    return None


class _Window(io.RawIOBase):
    """Read-only view of bytes [start, start+size) of a file: an inner tar inside the outer tar."""

    def __init__(self, fd, start, size):
        super().__init__()
        self._fd, self._start, self._size, self._pos = fd, start, size, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._pos

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, b):
        n = max(0, min(len(b), self._size - self._pos))
        if n == 0:
            return 0
        data = os.pread(self._fd, n, self._start + self._pos)
        b[:len(data)] = data
        self._pos += len(data)
        return len(data)


def _list_tar(path):
    """[(member, problem or None)] for every member of an uncompressed tar, reading headers only."""
    try:
        with tarfile.open(path, "r:") as tf:
            return [(m, _member_problem(m)) for m in tf]
    except tarfile.ReadError as e:
        raise SourceError(f"{path} is not a readable uncompressed tar archive ({e}); the official "
                          f"ILSVRC image archives are plain .tar files")


def _read_devkit(devkit_path, year):
    """(classes sorted, devkit ID -> wnid, {member name: bytes}) from the devkit tar.gz."""
    from scipy.io import loadmat

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
    id_to_wnid = {}
    for s in np.atleast_1d(synsets):
        if int(s["num_children"]) == 0:  # leaf synsets are the 1000 classes
            id_to_wnid[int(s[id_field])] = str(s["WNID"])
    classes = sorted(id_to_wnid.values())
    return classes, id_to_wnid, found


def _ground_truth(data, id_to_wnid, class_index, what):
    """Labels (sorted-wnid index) from a ground-truth file of devkit IDs, one per line."""
    labels = []
    for n, line in enumerate(data.decode().split(), 1):
        k = int(line)
        if k not in id_to_wnid:
            raise SourceError(f"{what} line {n}: devkit ID {k} is not a leaf synset of meta.mat")
        labels.append(class_index[id_to_wnid[k]])
    return labels


def _layout_text(source, year):
    names = ARCHIVES[year]
    lines = [f"expected the ILSVRC-{year} archives in {source}:"]
    for key in ("train", "val", "devkit", "test", "test_gt", "patch"):
        if key in names:
            opt = {"test": " (optional, with the next)", "patch": " (optional)"}.get(key, "")
            lines.append(f"  {names[key]}{opt}")
    lines.append(f"or the extracted layout {source}/train/<wnid>/*.JPEG and {source}/val/<wnid>/*.JPEG")
    return "\n".join(lines)


def _held_out_tasks(split, items, source_desc):
    """Shard tasks for val/test: items [(name, ..., label)] sorted by file name, in fixed-size chunks."""
    items = sorted(items, key=lambda t: t["name"])
    return [{"split": split, "shard": k, "kind": source_desc["kind"], "path": source_desc.get("path"),
             "items": items[i:i + HELD_OUT_SHARD]}
            for k, i in enumerate(range(0, len(items), HELD_OUT_SHARD))]


def plan_archives(source, year):
    """(classes, shard tasks, skipped) for the official archives of `year` in `source`."""
    names = ARCHIVES[year]
    path = {k: os.path.join(source, v) for k, v in names.items() if k in ("train", "val", "test",
                                                                             "devkit", "test_gt")}
    for key in ("train", "val", "devkit"):
        if not os.path.isfile(path[key]):
            raise SourceError(f"missing {path[key]}\n{_layout_text(source, year)}")
    if "test" in path and os.path.isfile(path["test"]) and not os.path.isfile(path["test_gt"]):
        raise SourceError(f"missing {path['test_gt']} (the ground truth of {names['test']})\n"
                          f"{_layout_text(source, year)}")
    classes, id_to_wnid, dev = _read_devkit(path["devkit"], year)
    class_index = {w: i for i, w in enumerate(classes)}
    skipped, tasks = [], []
    patches, patch_path = {"train": {}, "val": {}, "test": {}}, None
    if "patch" in names and os.path.isfile(os.path.join(source, names["patch"])):
        patch_path = os.path.join(source, names["patch"])
        for m, problem in _list_tar(patch_path):
            if problem is None:  # members <...>/<train|val|test>/<file name>
                parts = m.name.split("/")
                if len(parts) >= 2 and parts[-2] in patches:
                    patches[parts[-2]][parts[-1]] = [m.offset_data, m.size]
            elif problem != "directory":
                skipped.append({"file": f"{names['patch']}:{m.name}", "reason": problem})

    train_members = _list_tar(path["train"])
    shard = 0
    for m, problem in sorted(train_members, key=lambda t: t[0].name):
        where = f"{names['train']}:{m.name}"
        if problem == "directory":
            continue
        wnid = os.path.basename(m.name)[:-4] if m.name.endswith(".tar") else None
        if problem is None and wnid not in class_index:
            problem = f"not a <wnid>.tar of a devkit class: not used"
        if problem:
            skipped.append({"file": where, "reason": problem})
            continue
        tasks.append({"split": "train", "shard": shard, "kind": "inner_tar", "path": path["train"],
                      "archive": names["train"], "member": m.name, "offset": m.offset_data,
                      "size": m.size, "label": class_index[wnid], "patch_path": patch_path,
                      "patches": patches["train"]})
        shard += 1

    def flat(split, gt_labels, archive):
        items = []
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
            items.append({"name": name, "offset": m.offset_data, "size": m.size,
                          "label": gt_labels[int(num.group(1)) - 1], "where": where,
                          "patch": patches[split].get(name)})
        tasks_ = _held_out_tasks(split, items, {"kind": "flat_tar", "path": path[split]})
        for t in tasks_:
            t["patch_path"] = patch_path
        return tasks_

    val_gt = _ground_truth(dev[names["val_gt"]], id_to_wnid, class_index, names["val_gt"])
    tasks += flat("val", val_gt, names["val"])
    if "test" in path and os.path.isfile(path["test"]):
        with open(path["test_gt"], "rb") as f:
            test_gt = _ground_truth(f.read(), id_to_wnid, class_index, names["test_gt"])
        tasks += flat("test", test_gt, names["test"])
    return classes, tasks, skipped


def _scan_class_dirs(folder):
    """{wnid: [(name, path)]} of a split folder DIR/<split>/<wnid>/*; symlinks/devices reported."""
    out, skipped = {}, []
    for d in sorted(os.scandir(folder), key=lambda e: e.name):
        if not d.is_dir(follow_symlinks=False):
            continue
        files = []
        for e in sorted(os.scandir(d.path), key=lambda e: e.name):
            st = e.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                kind = "symlink" if stat.S_ISLNK(st.st_mode) else "special file"
                skipped.append({"file": e.path, "reason": f"not a regular file ({kind}): not used"})
                continue
            files.append((e.name, e.path))
        out[d.name] = files
    return out, skipped


def plan_folders(source):
    """(classes, tasks, skipped) for the extracted layout DIR/train/<wnid>/*, DIR/val/<wnid>/*."""
    train, skipped = _scan_class_dirs(os.path.join(source, "train"))
    classes = sorted(train)
    if not classes:
        raise SourceError(f"{source}/train has no <wnid> class folders\n"
                          f"expected the extracted layout {source}/train/<wnid>/*.JPEG and "
                          f"{source}/val/<wnid>/*.JPEG")
    class_index = {w: i for i, w in enumerate(classes)}
    tasks = [{"split": "train", "shard": k, "kind": "files", "label": class_index[w],
              "items": [{"name": n, "path": p, "label": class_index[w]} for n, p in train[w]]}
             for k, w in enumerate(classes)]
    for split in ("val", "test"):
        folder = os.path.join(source, split)
        if not os.path.isdir(folder):
            if split == "val":
                raise SourceError(f"missing {folder}\nexpected the extracted layout "
                                  f"{source}/train/<wnid>/*.JPEG and {source}/val/<wnid>/*.JPEG")
            continue
        found, sk = _scan_class_dirs(folder)
        skipped += sk
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise SourceError(f"{folder} has class folders that {source}/train lacks: "
                              f"{', '.join(unknown[:5])}")
        items = [{"name": n, "path": p, "label": class_index[w]} for w in found for n, p in found[w]]
        tasks += _held_out_tasks(split, items, {"kind": "files"})
    return classes, tasks, skipped


def plan(source, year):
    """Find what `source` holds and return (classes, shard tasks, skipped, layout name)."""
    source = os.path.abspath(source)
    if not os.path.isdir(source):
        raise SourceError(f"source folder {source} does not exist\n{_layout_text(source, year)}")
    this = [v for k, v in ARCHIVES[year].items() if k in ("train", "val", "devkit", "test")
            and os.path.exists(os.path.join(source, v))]
    other_year = 2010 if year == 2012 else 2012
    other = [v for k, v in ARCHIVES[other_year].items() if k in ("train", "val", "devkit", "test")
             and os.path.exists(os.path.join(source, v))]
    if other and not this:
        raise SourceError(f"--year {year} but {source} holds the ILSVRC-{other_year} files "
                          f"({', '.join(other)}); pass --year {other_year}")
    if this:
        return (*plan_archives(source, year), "archives")
    if os.path.isdir(os.path.join(source, "train")):
        return (*plan_folders(source), "folders")
    raise SourceError(f"missing {os.path.join(source, ARCHIVES[year]['train'])}\n"
                      f"{_layout_text(source, year)}")


def iter_task_images(task):
    """Yield (name, where, label, bytes or SkipImage) for the images of one shard, in stored order."""
    kind = task["kind"]
    if kind == "files":
        for it in sorted(task["items"], key=lambda t: t["name"]):
            try:
                with open(it["path"], "rb") as f:
                    data = f.read()
            except OSError as e:
                data = SkipImage(f"unreadable file ({e})")
            yield it["name"], it["path"], it["label"], data
    elif kind == "flat_tar":
        fd = os.open(task["path"], os.O_RDONLY)
        try:
            for it in task["items"]:
                if it.get("patch"):
                    yield it["name"], it["where"], it["label"], _read_patch(task, it["patch"])
                else:
                    yield it["name"], it["where"], it["label"], os.pread(fd, it["size"], it["offset"])
        finally:
            os.close(fd)
    elif kind == "inner_tar":
        fd = os.open(task["path"], os.O_RDONLY)
        try:
            window = io.BufferedReader(_Window(fd, task["offset"], task["size"]), 1 << 16)
            prefix = f"{task['archive']}:{task['member']}:"
            try:
                members = list(tarfile.open(fileobj=window, mode="r:"))
            except tarfile.TarError as e:
                yield task["member"], prefix, task["label"], SkipImage(f"unreadable inner tar ({e})")
                return
            good = []
            for m in members:
                problem = _member_problem(m)
                if problem == "directory":
                    continue
                if problem:
                    yield None, prefix + m.name, task["label"], SkipImage(problem)
                    continue
                good.append(m)
            for m in sorted(good, key=lambda m: (os.path.basename(m.name), m.name)):
                name = os.path.basename(m.name)
                patch = (task.get("patches") or {}).get(name)
                data = (_read_patch(task, patch) if patch else
                        os.pread(fd, m.size, task["offset"] + m.offset_data))
                yield name, prefix + m.name, task["label"], data
        finally:
            os.close(fd)
    else:
        raise ValueError(f"unknown task kind {kind}")


def _read_patch(task, patch):
    """Bytes of a replacement image from the 2010 patch_images.tar."""
    with open(task["patch_path"], "rb") as f:
        return os.pread(f.fileno(), patch[1], patch[0])
