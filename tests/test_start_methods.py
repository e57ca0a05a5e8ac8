"""Python 3.14 makes forkserver multiprocessing's default on Linux (spawn is macOS's): the build and the loader under it."""
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

CHECK = r"""
import json, multiprocessing as mp, os, sys, tempfile


def main():
    import numpy as np
    import torch
    from data_prep.build_imagenet import build
    from data_prep.make_demo_imagenet import make_demo_imagenet
    from paper_repro.data.loader import BatchLoader
    from paper_repro.data.store import ImageNetStore
    tmp = tempfile.mkdtemp()
    src = make_demo_imagenet(os.path.join(tmp, "src"), num_classes=2, train_per_class=6, val_per_class=2,
                             layout="folders")
    result = {"method": mp.get_start_method()}
    for fmt in ("jpeg", "raw"):
        out = os.path.join(tmp, fmt)
        build(src, out, workers=2, progress=False, fmt=fmt)  # a pool of two processes
        store = ImageNetStore(out, "train")
        order = np.arange(len(store))
        alone = torch.cat([x for x, _ in BatchLoader(store, order, 4, workers=0)])
        workers = torch.cat([x for x, _ in BatchLoader(store, order, 4, workers=2)])
        result[fmt] = [len(store), bool(torch.equal(alone, workers))]
    print(json.dumps(result))


if __name__ == "__main__":
    mp.set_start_method(sys.argv[1])
    main()
"""


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_build_and_loader_workers_work_under_other_start_methods(tmp_path, method):
    script = tmp_path / "check.py"
    script.write_text(CHECK)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, str(script), method], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"method": method, "jpeg": [12, True], "raw": [12, True]}
