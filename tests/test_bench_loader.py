"""python -m paper_repro.bench loader: every pipeline on both store formats beside the baseline, and its breakdown."""
import os

import numpy as np
import pytest

from data_prep.build_imagenet import build
from data_prep.make_demo_imagenet import make_demo_imagenet
from paper_repro.bench.command import get_args_parser
from paper_repro.bench.common import export_jpegs
from paper_repro.bench.loader import bench_loader
from paper_repro.core.cli import UsageError
from paper_repro.data.store import ImageNetStore
from paper_repro.training.host_memory import keep_freed_memory


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    base = tmp_path_factory.mktemp("bench_loader")
    src = make_demo_imagenet(str(base / "src"), 2, 8, 1, seed=2)
    build(src, str(base / "jpeg"), workers=1, progress=False, fmt="jpeg")
    build(src, str(base / "raw"), workers=1, progress=False, fmt="raw")
    return str(base / "jpeg"), str(base / "raw")


def test_loader_stage_measures_both_formats_and_the_baseline_in_one_run(stores, tmp_path):
    jpeg, raw = stores
    args = get_args_parser().parse_args(
        ["loader", "--data", raw, "--compare", jpeg, "--gpus", "cpu", "--workers", "1", "--batch-size", "4",
         "--seconds", "0.05", "--rounds", "2", "--warmup", "1", "--parts-images", "8", "--tmp", str(tmp_path / "scratch")])
    result = bench_loader(args)
    names = ("jpeg_store", "raw_store", "raw_store_in_workers", "imagefolder_baseline")
    for name in names:
        row = result[name]
        assert len(row["images_per_s_per_round"]) == 2 and row["images_per_s"] > 0
        assert row["images_per_s"] == float(np.median(row["images_per_s_per_round"]))
    base = result["imagefolder_baseline"]["images_per_s"]
    assert result["speedup"] == {n: result[n]["images_per_s"] / base for n in names[:3]}
    assert result["stores"] == {"raw": raw, "jpeg": jpeg}
    assert result["host_memory"] == keep_freed_memory(("cpu",))  # the training command's allocator policy
    parts = result["cpu_ms_per_image_one_thread"]
    assert set(parts) == {"jpeg_store", "raw_store", "imagefolder_baseline", "batch_layout"}
    assert set(parts.pop("batch_layout")) == {"collate_planar", "collate_hwc", "augment_planar", "augment_hwc"}
    assert set(parts["jpeg_store"]) == {"read", "decode", "collate", "augment", "total"}
    assert set(parts["raw_store"]) == {"gather", "augment", "total"}
    for stages in parts.values():
        assert stages["total"] == pytest.approx(sum(v for k, v in stages.items() if k != "total"))
    assert os.listdir(tmp_path / "scratch") == []  # --tmp made, and the baseline's JPEG copy in it gone


def test_baseline_reads_the_stores_jpegs(stores, tmp_path):
    jpeg, raw = stores
    j, r = ImageNetStore(jpeg, "train"), ImageNetStore(raw, "train")
    from_jpeg = export_jpegs(j, str(tmp_path / "a"))
    from_raw = export_jpegs(r, str(tmp_path / "b"))
    assert [os.path.relpath(p, tmp_path / "a") for p in from_jpeg] == [
        os.path.join(j.classes[int(j.labels[i])], j.filenames[i]) for i in range(len(j))]
    for i, (a, b) in enumerate(zip(from_jpeg, from_raw)):
        with open(a, "rb") as f:
            assert f.read() == j.read_encoded(i)
        with open(b, "rb") as f:
            data = f.read()
        assert data == j.read_encoded(i)  # a raw store's pixels encoded as the build encodes them


def test_two_stores_of_one_format_are_refused(stores):
    jpeg, _ = stores
    args = get_args_parser().parse_args(["loader", "--data", jpeg, "--compare", jpeg, "--gpus", "cpu"])
    with pytest.raises(UsageError, match="give at most one store of each format"):
        bench_loader(args)
