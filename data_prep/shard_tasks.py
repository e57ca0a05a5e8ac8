"""The shard tasks a build runs: one typed class per way a shard's images are read.

Every source layout (ilsvrc_sources.py, tiny_imagenet.py) plans its images as a SourcePlan of
these tasks; a task pickles to a worker process, and task.images() yields its images in stored
order. Tar members are read in place (an inner class tar through a window on the outer tar):
nothing is extracted, no member path ever touches the filesystem; absolute/'..' names, links and
devices are reported, not used.
"""
import io
import os
import re
import stat
import tarfile
from dataclasses import dataclass, field
from typing import Optional

from data_prep.image_recipe import SkipImage
from paper_repro.core.cli import UsageError

HELD_OUT_SHARD = 1000  # val/test images per shard (train: one shard per class)


class SourceError(UsageError):
    """The source folder does not hold what the build needs (message says what and where)."""


@dataclass
class SourcePlan:
    """What a build reads: classes (sorted wnids; label = index), their words, shard tasks, skipped files."""
    source_format: str  # "ilsvrc-archives", "folders" or "tiny-imagenet"
    classes: list
    class_words: list   # aligned with classes
    tasks: list
    skipped: list       # [{"file", "reason"}] found while planning
    notes: list = field(default_factory=list)  # summary lines about what the store leaves out


# ---------------------------------------------------------------------------- files on disk

@dataclass(frozen=True)
class SourceFile:
    """One image file on disk, stored under `name` with `label`."""
    name: str
    path: str
    label: int


@dataclass
class FileShard:
    """A shard of image files on disk (extracted folders, Tiny ImageNet)."""
    split: str
    shard: int
    files: list  # [SourceFile]

    def images(self):
        """Yield (name, where, label, bytes or SkipImage), sorted by name."""
        for f in sorted(self.files, key=lambda f: f.name):
            try:
                with open(f.path, "rb") as fh:
                    data = fh.read()
            except OSError as e:
                data = SkipImage(f"unreadable file ({e})")
            yield f.name, f.path, f.label, data


def list_regular_files(folder):
    """([(name, path)] sorted by name, skipped) of the files in `folder`; devices and broken links are reported.

    A symbolic link to a file counts as that file: a subset carved out of ImageNet with `ln -s` is the
    usual way to make one without copying it.
    """
    files, skipped = [], []
    for e in sorted(os.scandir(folder), key=lambda e: e.name):
        try:
            st = e.stat(follow_symlinks=True)
        except OSError as err:  # a link to nothing (or to where this process may not look)
            what = f"a symbolic link to {os.readlink(e.path)!r}" if e.is_symlink() else "a file"
            skipped.append({"file": e.path, "reason": f"{what} that cannot be read ({err.strerror or err}): not used"})
            continue
        if stat.S_ISDIR(st.st_mode):
            continue
        if not stat.S_ISREG(st.st_mode):
            skipped.append({"file": e.path, "reason": "not a regular file (special file): not used"})
            continue
        files.append((e.name, e.path))
    return files, skipped


def held_out_shards(split, items, make_shard):
    """val/test shards: items sorted by name in chunks of HELD_OUT_SHARD; make_shard(split, k, chunk)."""
    items = sorted(items, key=lambda it: it.name)
    return [make_shard(split, k, items[i:i + HELD_OUT_SHARD])
            for k, i in enumerate(range(0, len(items), HELD_OUT_SHARD))]


# ---------------------------------------------------------------------------- tar archives

def unsafe_member_name(name):
    """True for archive member names that are absolute or contain '..' (they are never used)."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) is not None or ".." in parts


def member_problem(m):
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


def _read_patch(patch_path, patch):
    """Bytes of a replacement image (offset, size) from the 2010 patch_images.tar."""
    with open(patch_path, "rb") as f:
        return os.pread(f.fileno(), patch[1], patch[0])


@dataclass(frozen=True)
class TarMember:
    """One image inside a flat tar at `offset`, `size`; `where` names it in reports."""
    name: str
    where: str
    label: int
    offset: int
    size: int
    patch: Optional[tuple] = None  # (offset, size) of its replacement in the patch tar


@dataclass
class FlatTarShard:
    """A shard of images stored directly in one tar (the val and test archives)."""
    split: str
    shard: int
    path: str
    members: list  # [TarMember]
    patch_path: Optional[str] = None

    def images(self):
        """Yield (name, where, label, bytes) in the planned order."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for m in self.members:
                data = (_read_patch(self.patch_path, m.patch) if m.patch else
                        os.pread(fd, m.size, m.offset))
                yield m.name, m.where, m.label, data
        finally:
            os.close(fd)


@dataclass
class ClassTarShard:
    """One class: the images of the tar `member` (at offset, size) inside the train archive at `path`."""
    split: str
    shard: int
    path: str
    archive: str  # the archive's file name, for reports
    member: str
    offset: int
    size: int
    label: int
    patch_path: Optional[str] = None
    patches: dict = field(default_factory=dict)  # file name -> (offset, size) in the patch tar

    def images(self):
        """Yield (name, where, label, bytes or SkipImage), sorted by file name."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            window = io.BufferedReader(_Window(fd, self.offset, self.size), 1 << 16)
            prefix = f"{self.archive}:{self.member}:"
            try:
                members = list(tarfile.open(fileobj=window, mode="r:"))
            except tarfile.TarError as e:
                yield self.member, prefix, self.label, SkipImage(f"unreadable inner tar ({e})")
                return
            good = []
            for m in members:
                problem = member_problem(m)
                if problem == "directory":
                    continue
                if problem:
                    yield None, prefix + m.name, self.label, SkipImage(problem)
                    continue
                good.append(m)
            for m in sorted(good, key=lambda m: (os.path.basename(m.name), m.name)):
                name = os.path.basename(m.name)
                patch = self.patches.get(name)
                data = (_read_patch(self.patch_path, patch) if patch else
                        os.pread(fd, m.size, self.offset + m.offset_data))
                yield name, prefix + m.name, self.label, data
        finally:
            os.close(fd)
