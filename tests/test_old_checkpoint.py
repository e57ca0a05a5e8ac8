"""A checkpoint written before the package moved into folders (main at 82459cd) still loads, and computes the same."""
import os

import torch

from paper_repro.nets.checkpoint import load_checkpoint, load_model

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
OLD = os.path.join(FIXTURES, "checkpoint_82459cd.pt")


def test_checkpoint_from_before_the_move_gives_the_logits_it_gave_then():
    # Written by `python -m paper_repro.train ... --width 0.03 --bias-init 0.1 --epochs 1` at 82459cd; the
    # logits beside it were computed by that commit's load_model on the seeded input below.
    expected = torch.load(os.path.join(FIXTURES, "checkpoint_82459cd_logits.pt"), weights_only=True)
    net = load_model(OLD)
    x = torch.randn(*expected["input_shape"], generator=torch.Generator().manual_seed(expected["input_seed"]))
    with torch.no_grad():
        logits = net(x * expected["input_scale"])
    torch.testing.assert_close(logits, expected["logits"], rtol=1e-5, atol=1e-6)


def test_checkpoint_from_before_the_move_keeps_its_run_state():
    ckpt = load_checkpoint(OLD)
    assert ckpt["format"] == 2 and (ckpt["epoch"], ckpt["step"]) == (1, 0)
    assert ckpt["model_config"]["width"] == 0.03 and ckpt["model_config"]["num_classes"] == 3
