"""Checkpoints that survive a bad disk: verified before they replace anything, the previous one kept."""
import errno
import os

import pytest
import torch

from paper_repro.nets import checkpoint as C


def _ckpt(epoch, step=0):
    return {"epoch": epoch, "step": step, "model": {"w": torch.full((64,), float(epoch))}}


def test_each_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / C.CHECKPOINT
    C.save_checkpoint(path, _ckpt(1))
    assert sorted(os.listdir(tmp_path)) == [C.CHECKPOINT]
    C.save_checkpoint(path, _ckpt(2))
    C.save_checkpoint(path, _ckpt(3))
    assert sorted(os.listdir(tmp_path)) == sorted([C.CHECKPOINT, C.PREVIOUS])
    assert C.load_checkpoint(path)["epoch"] == 3 and C.load_checkpoint(tmp_path / C.PREVIOUS)["epoch"] == 2


def test_a_disk_that_fills_up_loses_no_older_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / C.CHECKPOINT
    C.save_checkpoint(path, _ckpt(1))
    C.save_checkpoint(path, _ckpt(2))
    real_save = torch.save

    def full_disk(obj, f):
        real_save(obj, f)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        C.save_checkpoint(path, _ckpt(3))
    assert sorted(os.listdir(tmp_path)) == sorted([C.CHECKPOINT, C.PREVIOUS])  # no temp file left behind
    assert C.load_checkpoint(path)["epoch"] == 2 and C.load_checkpoint(tmp_path / C.PREVIOUS)["epoch"] == 1


def test_a_checkpoint_that_does_not_read_back_replaces_nothing(tmp_path, monkeypatch):
    path = tmp_path / C.CHECKPOINT
    C.save_checkpoint(path, _ckpt(1))
    monkeypatch.setattr(torch, "save", lambda obj, f: f.write(b"PK\x03\x04 cut short"))  # a zip cut short
    with pytest.raises(C.CheckpointError, match="its archive is incomplete|not a torch.save file"):
        C.save_checkpoint(path, _ckpt(2))
    assert os.listdir(tmp_path) == [C.CHECKPOINT] and C.load_checkpoint(path)["epoch"] == 1


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing"])
def test_resume_falls_back_to_the_previous_checkpoint_with_a_warning(tmp_path, damage):
    path = tmp_path / C.CHECKPOINT
    C.save_checkpoint(path, _ckpt(1))
    C.save_checkpoint(path, _ckpt(1, step=40))
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 100)
    else:
        path.unlink()
    warnings = []
    ckpt, used = C.load_run_checkpoint(str(tmp_path), warn=warnings.append)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 0) and used == str(tmp_path / C.PREVIOUS)
    assert len(warnings) == 1 and warnings[0].startswith(f"WARNING: checkpoint {path} ")
    assert warnings[0].endswith(f"; resuming from the previous checkpoint {tmp_path / C.PREVIOUS} instead (after "
                                f"epoch 1): the steps after it are lost and will be trained again")


def test_no_loadable_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / C.CHECKPOINT).write_bytes(b"\x00" * 10)
    with pytest.raises(C.CheckpointError) as e:
        C.load_run_checkpoint(str(tmp_path), warn=lambda text: None)
    assert str(e.value) == (
        f"run {tmp_path} has no loadable checkpoint: checkpoint {tmp_path / C.CHECKPOINT} is not a readable "
        f"checkpoint (truncated or corrupt?): it is not a torch.save file (UnpicklingError); "
        f"checkpoint {tmp_path / C.PREVIOUS} does not exist. Start a new run with another --out (or without --resume)")


class NotATensor:
    """A Python object that weights_only=True refuses to unpickle."""


def test_garbage_never_gets_advice_to_load_unsafely(tmp_path):
    torch.save({"x": NotATensor()}, tmp_path / "pickled.pt")
    for name, data in (("zeros.pt", b"\x00" * 100), ("text.pt", b"hello"), ("pickled.pt", None)):
        if data is not None:
            (tmp_path / name).write_bytes(data)
        with pytest.raises(C.CheckpointError) as e:
            C.load_checkpoint(tmp_path / name)
        assert "weights_only=False" not in str(e.value) and "\n" not in str(e.value)
        assert str(e.value).startswith(f"checkpoint {tmp_path / name} is not a readable checkpoint")


def test_stale_temp_files_of_a_killed_save_are_removed(tmp_path):
    C.save_checkpoint(tmp_path / C.CHECKPOINT, _ckpt(1))
    stale = tmp_path / f".{C.CHECKPOINT}.abc123.tmp"
    stale.write_bytes(b"partial")
    (tmp_path / "other.tmp").write_bytes(b"not ours")
    C.remove_stale_temps(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [C.CHECKPOINT, "other.tmp"]
