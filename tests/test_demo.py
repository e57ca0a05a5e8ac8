"""The README's first command, shrunk: python -m paper_repro.demo runs every stage and writes a report."""
import json
import os
import subprocess
import sys

from conftest import ROOT


def test_demo_runs_every_stage_and_links_its_figures(tmp_path):
    out, work = tmp_path / "report", tmp_path / "work"
    cmd = [sys.executable, "-m", "paper_repro.demo", "--out", str(out), "--workdir", str(work), "--classes", "3",
           "--train-per-class", "6", "--val-per-class", "2", "--epochs", "1", "--workers", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "demo_summary.json").read_text())
    assert set(summary["seconds"]) == {"generate", "build", "train", "evaluate", "report", "total"}
    assert summary["images"] == 6 and summary["chance_top1_error"] == 1 - 1 / 3
    ev = json.loads((out / "eval_val_10view.json").read_text())
    assert ev["views"] == 10 and ev["split"] == "val" and ev["top1_error"] == summary["top1_error"]
    report = (out / "report.md").read_text()
    assert "a generated demo data set (3 classes; not ImageNet)" in report
    for png in ("curves.png", "conv1_kernels.png", "neighbours.png"):
        assert f"({png})" in report and (out / png).stat().st_size > 1000, png
    assert "demo done in" in done.stdout and "report.md" in done.stdout
