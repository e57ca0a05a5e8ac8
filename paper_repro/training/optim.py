"""The paper's SGD: momentum and weight decay with the learning rate inside the velocity."""
from collections import defaultdict

import torch

def _plain(method):
    """torch.optim.Optimizer's own method without its torch._dynamo.disable wrapper (functools.wraps' __wrapped__;
    the method as it is where a torch version has none)."""
    return getattr(method, "__wrapped__", method)


class PaperSGD(torch.optim.Optimizer):
    """v <- momentum*v - weight_decay*lr*w - lr*grad;  w <- w + v  (section 5 of the paper).

    torch.optim.SGD keeps v <- momentum*v + grad and steps w <- w - lr*v, so a learning-rate
    drop there rescales the whole velocity at once; here the old velocity keeps its size and
    only the new contributions use the new rate, as in the authors' code. Each parameter group has
    its own lr and weight_decay (training/param_groups.py: per layer, biases apart); a group whose lr
    is 0 is skipped entirely, as cuda-convnet skips a layer whose epsW is 0.
    """

    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0005, foreach=True):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"PaperSGD: lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=foreach))

    # torch wraps these four in torch._disable_dynamo, whose first call imports torch._dynamo: 0.8 s of
    # every training process's start (a quarter-width epoch is 26 s; results/benchmarks.md). This
    # optimizer is never compiled, so it calls torch's own code without the wrapper.
    def add_param_group(self, param_group):
        """torch.optim.Optimizer.add_param_group."""
        _plain(torch.optim.Optimizer.add_param_group)(self, param_group)

    def zero_grad(self, set_to_none=True):
        """torch.optim.Optimizer.zero_grad."""
        _plain(torch.optim.Optimizer.zero_grad)(self, set_to_none)

    def state_dict(self):
        """torch.optim.Optimizer.state_dict."""
        return _plain(torch.optim.Optimizer.state_dict)(self)

    def load_state_dict(self, state_dict):
        """torch.optim.Optimizer.load_state_dict."""
        _plain(torch.optim.Optimizer.load_state_dict)(self, state_dict)

    @torch.no_grad()
    def step(self, closure=None):
        """Apply one update to every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
            if lr == 0:
                continue  # a frozen layer (the released schedule's conv1): no decay, no leftover momentum
            # _foreach ops want one device and dtype per list: the two columns may sit on two GPUs.
            buckets = defaultdict(lambda: ([], [], []))
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("PaperSGD does not support sparse gradients")
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                ws, gs, vs = buckets[(p.device, p.dtype)]
                ws.append(p)
                gs.append(p.grad)
                vs.append(state["velocity"])
            for ws, gs, vs in buckets.values():
                if group["foreach"]:
                    torch._foreach_mul_(vs, m)
                    if wd != 0:
                        torch._foreach_add_(vs, ws, alpha=-wd * lr)
                    torch._foreach_add_(vs, gs, alpha=-lr)
                    torch._foreach_add_(ws, vs)
                else:
                    for w, g, v in zip(ws, gs, vs):
                        v.mul_(m)
                        if wd != 0:
                            v.add_(w, alpha=-wd * lr)
                        v.add_(g, alpha=-lr)
                        w.add_(v)
        return loss
