"""PaperSGD against the paper's update written out, across a learning-rate drop."""
import io

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
