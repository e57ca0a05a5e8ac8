"""Atomic file writes and checkpoint save/load (weights_only=True)."""
import json
import os
import tempfile

import torch


def _umask():
    """The process umask, read without changing it where the OS allows (os.umask is not thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write_fn, mode="wb"):
    """Call write_fn(file) on a temp file beside `path`, fsync, then rename it over `path`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        # mkstemp creates the file 0600; give it the permissions an ordinary open() would have.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path, obj):
    """Write `obj` as indented JSON to `path` atomically."""
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n"), mode="w")


def save_checkpoint(path, obj):
    """torch.save `obj` to `path` atomically (a kill mid-write leaves the old file intact)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint with weights_only=True, with a clear error if it is missing or unreadable."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"checkpoint {path} could not be loaded with weights_only=True: {e}") from e
