"""Shared test fixtures: small generated ILSVRC-shaped stores built by the real pipeline."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from data_prep.build_imagenet import build  # noqa: E402
from data_prep.make_demo_imagenet import make_demo_imagenet  # noqa: E402
from paper_repro.data import augment  # noqa: E402


def store_files(root):
    """{relative path: bytes} of every file under root: two stores compared byte for byte."""
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            with open(os.path.join(d, n), "rb") as f:
                out[os.path.relpath(os.path.join(d, n), root)] = f.read()
    return out


def make_store(tmp_path, num_classes=4, train_per_class=12, val_per_class=4, seed=0, layout="archives",
               year=2012, workers=1):
    """Generate a demo data set under tmp_path and build its store; returns the store path (str)."""
    name = f"c{num_classes}_t{train_per_class}_v{val_per_class}_s{seed}_{layout}_{year}"
    source = os.path.join(os.fspath(tmp_path), "source_" + name)
    out = os.path.join(os.fspath(tmp_path), "store_" + name)
    if not os.path.isfile(os.path.join(out, "manifest.json")):
        make_demo_imagenet(source, num_classes, train_per_class, val_per_class, seed, layout, year)
        build(source, out, year=year, workers=workers, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
    """A store of 4 generated classes, 12 train + 4 val images each (built in about a second)."""
    return make_store(tmp_path_factory.mktemp("tiny_store"), 4, 12, 4, seed=0)


@pytest.fixture(scope="session")
def store_factory(tmp_path_factory):
    """store_factory(num_classes, train_per_class, val_per_class, seed=0) -> path of a built store (cached)."""
    base = tmp_path_factory.mktemp("stores")

    def factory(num_classes=4, train_per_class=12, val_per_class=4, seed=0):
        return make_store(base, num_classes, train_per_class, val_per_class, seed)

    return factory


@pytest.fixture
def one_thread():
    """Single-threaded kernels: on shared cores, two spinning threads per process are much slower."""
    with augment.one_thread():
        yield
