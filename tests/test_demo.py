"""The README's first command, shrunk: python -m paper_repro.demo runs every stage and writes a report."""
import json
import os
import signal
import subprocess
import sys

import torch
from conftest import ROOT

from paper_repro import demo


def test_demo_runs_every_stage_and_links_its_figures(tmp_path):
    out, work = tmp_path / "report", tmp_path / "work"
    cmd = [sys.executable, "-m", "paper_repro.demo", "--out", str(out), "--workdir", str(work), "--classes", "3",
           "--train-per-class", "11", "--val-per-class", "2", "--epochs", "1", "--workers", "0"]
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
    # the layout for what this machine has (a GPU machine once failed the CPU wording here)
    layout = {0: "cpu, cpu (--gpus cpu,cpu", 1: "cuda:0 (--gpus 0"}.get(torch.cuda.device_count(),
                                                                     "cuda:0, cuda:1 (--gpus 0,1")
    assert done.stdout.splitlines()[0].startswith(
        f"demo: generate a data set of 3 classes, build its store, train on {layout}: not given, ")
    # Run again after it finished: a no-op that says where the report is; no stage runs, nothing is rewritten.
    stamps = {f: os.stat(out / f).st_mtime_ns for f in os.listdir(out)}
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stderr == "", again.stderr
    assert again.stdout == (f"demo already done with these settings ({out / 'demo_summary.json'}; it took "
                            f"{summary['seconds']['total']:.0f} s): ten-view val top-1 error {ev['top1_error']:.3f} "
                            f"(chance 0.667), top-5 {ev['top5_error']:.3f}; report: {out / 'report.md'}. To run it "
                            f"again, delete {out} or pass another --out\n")
    assert {f: os.stat(out / f).st_mtime_ns for f in os.listdir(out)} == stamps
    args = demo.get_args_parser().parse_args(cmd[3:])
    assert demo.finished(args) == summary
    args.epochs = 2  # other settings: not this demo, it runs
    assert demo.finished(args) is None


def test_demo_refuses_a_gpu_this_machine_lacks_before_doing_any_work(tmp_path):
    cmd = [sys.executable, "-m", "paper_repro.demo", "--gpus", "7", "--workdir", str(tmp_path / "work")]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}  # no GPU, whatever the machine has
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == ("paper_repro.demo: error: --gpus '7': this machine has no CUDA device; "
                                   "pass --gpus cpu (or cpu,cpu for two columns)")
    assert not (tmp_path / "work").exists()


def test_ctrl_c_lets_the_stage_save_and_the_demo_says_how_to_continue(tmp_path):
    # A stage that, like train, takes Ctrl-C as "save, then exit 130"; the demo must wait for it, not kill it.
    stage = tmp_path / "stage.py"
    stage.write_text(
        "import signal, sys, time, pathlib\n"
        "def stop(s, f):\n"
        "    time.sleep(0.5)\n"  # longer than subprocess.run's 0.25 s grace before it kills a child
        f"    pathlib.Path({str(tmp_path / 'saved')!r}).write_text('ok')\n"
        "    sys.exit(130)\n"
        "signal.signal(signal.SIGINT, stop)\n"
        f"pathlib.Path({str(tmp_path / 'started')!r}).write_text('ok')\n"
        "time.sleep(60)\n")
    driver = tmp_path / "driver.py"
    driver.write_text("import sys\nfrom paper_repro import demo\nfrom paper_repro.core import cli\n"
                      f"cli.run('paper_repro.demo', demo.run, 'train', [sys.executable, {str(stage)!r}])\n")
    proc = subprocess.Popen([sys.executable, str(driver)], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        while not (tmp_path / "started").exists():
            assert proc.poll() is None, proc.communicate()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and (tmp_path / "saved").read_text() == "ok"
    assert err.strip().splitlines()[-1] == ("paper_repro.demo: interrupted: during train; run the same demo "
                                            "command again to continue where it stopped")
