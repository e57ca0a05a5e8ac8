"""PaperSGD against the paper's update written out, across a learning-rate drop; --optimizer adam against Adam's."""
import copy
import io
import subprocess
import sys

import pytest
import torch

from paper_repro.training.optim import PaperSGD

LRS = [0.1, 0.1, 0.1, 0.01, 0.01, 0.001]  # two drops


def _grads(steps, shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g, dtype=torch.float64) for s in shapes] for _ in range(steps)]


def _params(shapes, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes]


def _run(make_opt, grads, lrs, shapes):
    params = _params(shapes)
    opt = make_opt(params)
    history = []
    for lr, gs in zip(lrs, grads):
        for group in opt.param_groups:
            group["lr"] = lr
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
        history.append([p.detach().clone() for p in params])
    return history


def test_matches_the_papers_formula_across_lr_drops():
    shapes = [(4, 3), (5,)]
    grads = _grads(len(LRS), shapes)
    got = _run(lambda ps: PaperSGD(ps, lr=LRS[0]), grads, LRS, shapes)
    w = [p.detach().clone() for p in _params(shapes)]
    v = [torch.zeros_like(x) for x in w]
    for t, lr in enumerate(LRS):
        for i in range(len(w)):
            v[i] = 0.9 * v[i] - 0.0005 * lr * w[i] - lr * grads[t][i]  # section 5, verbatim
            w[i] = w[i] + v[i]
            torch.testing.assert_close(got[t][i], w[i], rtol=1e-13, atol=1e-15)


def test_differs_from_torch_sgd_only_after_a_drop():
    shapes = [(6,)]
    grads = _grads(len(LRS), shapes)
    ours = _run(lambda ps: PaperSGD(ps, lr=LRS[0]), grads, LRS, shapes)
    torch_sgd = _run(lambda ps: torch.optim.SGD(ps, lr=LRS[0], momentum=0.9, weight_decay=0.0005), grads, LRS, shapes)
    for t in range(3):  # constant lr: the two parametrisations are the same update
        torch.testing.assert_close(ours[t][0], torch_sgd[t][0], rtol=1e-12, atol=1e-12)
    # After the drop torch.optim.SGD scales its whole accumulated velocity by the new lr at once.
    assert (ours[3][0] - torch_sgd[3][0]).abs().max() > 1e-3


def test_foreach_and_loop_agree_and_params_without_grad_stay():
    shapes = [(3, 3), (2,)]
    grads = _grads(4, shapes)
    a = _run(lambda ps: PaperSGD(ps, lr=0.05, foreach=True), grads, [0.05, 0.05, 0.005, 0.005], shapes)
    b = _run(lambda ps: PaperSGD(ps, lr=0.05, foreach=False), grads, [0.05, 0.05, 0.005, 0.005], shapes)
    for x, y in zip(a[-1], b[-1]):
        torch.testing.assert_close(x, y, rtol=1e-14, atol=1e-15)
    frozen = torch.ones(3, requires_grad=True)
    opt = PaperSGD([frozen], lr=0.1)
    opt.step()
    assert torch.equal(frozen, torch.ones(3))


def test_state_dict_round_trip_continues_exactly():
    shapes = [(4,), (2, 2)]
    grads = _grads(6, shapes)
    params = _params(shapes)
    opt = PaperSGD(params, lr=0.1)
    for gs in grads[:3]:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)  # as a checkpoint would: a copy, loadable with weights_only
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    params2 = [p.detach().clone().requires_grad_() for p in params]
    opt2 = PaperSGD(params2, lr=0.5)  # wrong lr on purpose: the state dict must restore it
    opt2.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == 0.1
    for gs in grads[3:]:
        for ps in (params, params2):
            for p, g in zip(ps, gs):
                p.grad = g.clone()
        opt.step()
        opt2.step()
    for p, q in zip(params, params2):
        assert torch.equal(p, q)


def test_adam_is_keras_adam_and_its_state_survives_a_checkpoint():
    """--optimizer adam: one step equals Adam's formula with Keras' eps; saved and loaded state continues exactly."""
    from argparse import Namespace

    from paper_repro.training.build import make_optimizer
    from paper_repro.training.run_state import load_optimizer_state, optimizer_state

    settings = Namespace(optimizer="adam", lr=0.001, weight_decay=0.0, bias_lr_mult=1.0, bias_decay=True,
                         momentum=0.9)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))

    def step(model, opt):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    opt = make_optimizer(net, settings)
    before = [p.detach().clone() for p in net.parameters()]
    step(net, opt)
    for w0, p in zip(before, net.parameters()):
        g = p.grad
        m, v = 0.1 * g, 0.001 * g * g  # the first moments after one step: (1 - beta) x
        expected = w0 - 0.001 * (m / 0.1) / ((v / 0.001).sqrt() + 1e-7)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-7)
    step(net, opt)
    saved, weights = optimizer_state(net, opt), copy.deepcopy(net.state_dict())
    assert saved["step"] == 2 and set(saved) == {"exp_avg", "exp_avg_sq", "step", "param_groups"}
    step(net, opt)
    step(net, opt)
    again = copy.deepcopy(net)
    again.load_state_dict(weights)
    opt_again = make_optimizer(again, settings)
    load_optimizer_state(again, opt_again, saved)
    step(again, opt_again)
    step(again, opt_again)
    for a, b in zip(net.parameters(), again.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="^the checkpoint holds adam's state and this run's optimizer is paper-sgd: "
                                         "resume it with --optimizer adam$"):
        load_optimizer_state(again, make_optimizer(again, Namespace(**{**vars(settings), "optimizer": "paper-sgd"})),
                             saved)


def test_paper_sgd_keeps_torchs_param_groups_state_dict_and_zero_grad():
    """The four methods PaperSGD calls without torch's dynamo wrapper do what torch.optim.Optimizer's do."""
    shapes = [(3, 2), (2,)]
    params = _params(shapes)
    opt = PaperSGD([{"params": params[:1]}, {"params": params[1:], "weight_decay": 0.0}], lr=0.1)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0005, 0.0]
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        opt.add_param_group({"params": params[:1]})
    for p, g in zip(params, _grads(1, shapes)[0]):
        p.grad = g
    opt.step()
    mine = opt.state_dict()
    assert mine == torch.optim.Optimizer.state_dict(opt) and set(mine["state"]) == {0, 1}
    fresh = PaperSGD([{"params": [q]} for q in _params(shapes)], lr=0.5)
    fresh.load_state_dict(copy.deepcopy(mine))
    assert fresh.state_dict()["param_groups"] == mine["param_groups"]
    assert all(torch.equal(fresh.state_dict()["state"][i]["velocity"], mine["state"][i]["velocity"]) for i in (0, 1))
    opt.zero_grad()
    assert all(p.grad is None for p in params)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.zero_grad(set_to_none=False)
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in params)


def test_a_paper_sgd_run_does_not_import_torch_dynamo():
    """Constructing, stepping, saving and loading PaperSGD leaves torch._dynamo unimported (0.8 s of start-up)."""
    code = ("import sys, torch\n"
            "if 'torch._dynamo' in sys.modules: print('torch imports it'); sys.exit(0)\n"
            "from paper_repro.training.optim import PaperSGD\n"
            "m = torch.nn.Linear(2, 2); o = PaperSGD(m.parameters(), lr=0.1)\n"
            "m(torch.randn(3, 2)).sum().backward(); o.step(); o.zero_grad(); o.load_state_dict(o.state_dict())\n"
            "print('imported' if 'torch._dynamo' in sys.modules else 'not imported')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    if out == "torch imports it\n":
        pytest.skip("this torch imports torch._dynamo itself")
    assert out == "not imported\n"
