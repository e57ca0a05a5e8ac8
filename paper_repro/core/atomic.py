"""Atomic file writes: a temp file beside the target, fsync, rename. A kill at any moment leaves the old file or the new one."""
import json
import os
import tempfile


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


def atomic_write(path, write_fn, mode="wb", before_rename=None):
    """Call write_fn(file) on a temp file beside `path`, fsync, then rename it over `path`.

    before_rename(tmp_path), if given, runs after the temp file is complete and just before the rename
    (to verify the new file, or to keep the old one); an exception there leaves `path` untouched.
    """
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
        if before_rename is not None:
            before_rename(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path, obj):
    """Write `obj` as indented JSON to `path` atomically."""
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n"), mode="w")


def print_json(obj, path=None, indent=2):
    """Print `obj` as JSON (what a benchmark command shows) and, if `path` is given, write it there atomically."""
    print(json.dumps(obj, indent=indent))
    if path:
        atomic_write_json(path, obj)
    return obj


def atomic_write_bytes(path, data):
    """Write `data` (bytes) to `path` atomically."""
    atomic_write(path, lambda f: f.write(data))


def stale_temps(folder, name):
    """Temp files that atomic_write(folder/name) left behind when killed mid-write."""
    prefix = "." + name + "."
    return [os.path.join(folder, f) for f in os.listdir(folder) if f.startswith(prefix) and f.endswith(".tmp")] \
        if os.path.isdir(folder) else []
