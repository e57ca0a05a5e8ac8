"""Where the Tiny ImageNet images are: its own extracted layout, read as it is.

    DIR/wnids.txt                      the classes (one wnid a line)
    DIR/words.txt                      wnid <tab> words (all of ImageNet's)
    DIR/train/<wnid>/images/*.JPEG     training images of each class
    DIR/val/images/*.JPEG              validation images,
    DIR/val/val_annotations.txt        labelled by file <tab> wnid <tab> box
    DIR/test/images/*.JPEG             unlabelled: counted, not stored (a store image has a label)

plan_tiny_imagenet(source) returns a SourcePlan (labels = index of the wnid in sorted order); a
broken layout (a wnid that wnids.txt lacks, a listed image that is missing, a class without
training images) is a SourceError naming the file and line.
"""
import os

from data_prep.shard_tasks import FileShard, SourceError, SourceFile, SourcePlan, held_out_shards, list_regular_files

WNIDS, WORDS, VAL_ANNOTATIONS = "wnids.txt", "words.txt", os.path.join("val", "val_annotations.txt")


def is_tiny_imagenet(source):
    """True when `source` holds the Tiny ImageNet layout (its wnids.txt is the mark)."""
    return os.path.isfile(os.path.join(source, WNIDS))


def layout_text(source):
    """What a Tiny ImageNet folder should hold (the tail of every layout error)."""
    return "\n".join([f"expected the Tiny ImageNet layout in {source}:",
                      "  wnids.txt, words.txt",
                      "  train/<wnid>/images/*.JPEG",
                      "  val/images/*.JPEG and val/val_annotations.txt",
                      "  test/images/*.JPEG (optional; unlabelled, not stored)"])


def _lines(path):
    """[(line number, [tab-separated fields])] of the non-empty lines of a text file."""
    with open(path, encoding="utf-8") as f:
        return [(n, line.rstrip("\r\n").split("\t")) for n, line in enumerate(f, 1) if line.strip()]


def _read_wnids(source):
    """The sorted wnids of wnids.txt (labels are their indexes)."""
    path = os.path.join(source, WNIDS)
    wnids = []
    for n, fields in _lines(path):
        wnid = fields[0].strip()
        if wnid in wnids:
            raise SourceError(f"{path} line {n}: wnid {wnid} is listed twice")
        wnids.append(wnid)
    if not wnids:
        raise SourceError(f"{path} lists no wnids\n{layout_text(source)}")
    return sorted(wnids)


def _read_words(source, classes):
    """The words of each class from words.txt (the wnid itself where words.txt has none)."""
    words = {}
    for _, fields in _lines(os.path.join(source, WORDS)):
        if len(fields) >= 2:
            words[fields[0].strip()] = fields[1].strip()
    return [words.get(w, w) for w in classes]


def _train_shards(source, classes, skipped):
    """One FileShard per class of train/<wnid>/images/*; an extra or empty class folder is an error."""
    train = os.path.join(source, "train")
    extra = sorted(set(e.name for e in os.scandir(train) if e.is_dir()) - set(classes))
    if extra:
        raise SourceError(f"{train}/{extra[0]} is a class folder but {extra[0]} is not in "
                          f"{os.path.join(source, WNIDS)}; add it there or remove the folder")
    shards = []
    for k, wnid in enumerate(classes):
        folder = os.path.join(train, wnid, "images")
        if not os.path.isdir(folder):
            raise SourceError(f"missing {folder} (class {wnid} of {WNIDS})\n{layout_text(source)}")
        files, sk = list_regular_files(folder)
        skipped += sk
        if not files:
            raise SourceError(f"{folder} has no images: class {wnid} of {WNIDS} is empty; "
                              f"every class needs training images")
        shards.append(FileShard("train", k, [SourceFile(n, p, k) for n, p in files]))
    return shards


def _val_shards(source, class_index, skipped):
    """FileShards of val/images/*, labelled by val/val_annotations.txt."""
    folder, ann = os.path.join(source, "val", "images"), os.path.join(source, VAL_ANNOTATIONS)
    present = set(os.listdir(folder))
    regular, sk = list_regular_files(folder)
    skipped += sk
    regular = dict(regular)
    labels = {}
    for n, fields in _lines(ann):
        if len(fields) < 2:
            raise SourceError(f"{ann} line {n}: expected <file> <tab> <wnid>, got {fields[0]!r}")
        name, wnid = fields[0].strip(), fields[1].strip()
        if os.path.basename(name) != name or name in (".", ".."):
            raise SourceError(f"{ann} line {n}: {name!r} is not a file name in {folder}")
        if wnid not in class_index:
            raise SourceError(f"{ann} line {n}: wnid {wnid} is not in {os.path.join(source, WNIDS)}")
        if name not in present:
            raise SourceError(f"{ann} line {n}: missing image {os.path.join(folder, name)}")
        if name in labels:
            raise SourceError(f"{ann} line {n}: {name} is labelled twice")
        labels[name] = class_index[wnid]
    files = []
    for name, path in sorted(regular.items()):
        if name in labels:
            files.append(SourceFile(name, path, labels[name]))
        else:
            skipped.append({"file": path, "reason": f"no entry in {VAL_ANNOTATIONS}: not used"})
    return held_out_shards("val", files, FileShard)


def plan_tiny_imagenet(source):
    """The SourcePlan of the Tiny ImageNet layout in `source` (train and val; test has no labels)."""
    for rel in (WNIDS, WORDS, "train", os.path.join("val", "images"), VAL_ANNOTATIONS):
        if not os.path.exists(os.path.join(source, rel)):
            raise SourceError(f"missing {os.path.join(source, rel)}\n{layout_text(source)}")
    classes = _read_wnids(source)
    skipped = []
    tasks = _train_shards(source, classes, skipped)
    tasks += _val_shards(source, {w: i for i, w in enumerate(classes)}, skipped)
    notes = []
    test = os.path.join(source, "test", "images")
    if os.path.isdir(test):
        n = len(list_regular_files(test)[0])
        notes.append(f"test: {n} unlabelled images in {test} not stored (a store image has a label)")
    return SourcePlan("tiny-imagenet", classes, _read_words(source, classes), tasks, skipped, notes)
