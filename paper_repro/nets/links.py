"""The links between the two columns: the only place activations cross devices, and the bytes that cross."""
import functools

import torch

LINKS = ("input", "conv3", "fc6", "fc7", "fc8")  # every place activations cross between devices


class LinkTraffic:
    """Bytes that crossed between the columns at each link: activations (forward) and their gradients (backward)."""

    def __init__(self):
        """Start from zero at every link."""
        self.forward = dict.fromkeys(LINKS, 0)
        self.backward = dict.fromkeys(LINKS, 0)

    def reset(self):
        """Zero every count (e.g. before the step to be measured)."""
        self.__init__()

    def total(self):
        """All bytes both ways, every link."""
        return sum(self.forward.values()) + sum(self.backward.values())

    def sent(self, link, tensor, arrived):
        """Count `tensor` sent across `link`; if `arrived` needs a gradient, count that gradient when it goes back."""
        self.forward[link] += tensor.numel() * tensor.element_size()
        if arrived.requires_grad:
            arrived.register_hook(functools.partial(self._gradient_back, link))

    def _gradient_back(self, link, grad):
        self.backward[link] += grad.numel() * grad.element_size()


def transfer(tensor, device, link, traffic=None, copy=False):
    """Move `tensor` to `device` across inter-column `link` (one of LINKS): the only cross-device move.

    `traffic` (a LinkTraffic) counts the bytes sent, and those of the gradient that comes back in
    the backward pass, also when both columns share a device and nothing moves. `copy=True`
    copies even within one device, so the graph holds the copy node a two-device run has.
    """
    # non_blocking: a copy to a GPU is ordered on the device streams, so the host does not wait
    # and both columns' kernels keep being queued. Never towards the CPU: host code would read the
    # buffer before the copy lands. Same device and no copy: .to returns `tensor` itself.
    out = tensor.to(device, non_blocking=torch.device(device).type != "cpu", copy=copy)
    if traffic is not None:
        if out is tensor and out.requires_grad:
            out = tensor.view_as(tensor)  # the hook must see only this link's gradient, on a tensor of its own
        traffic.sent(link, tensor, out)
    return out


def autocast_dtype(device):
    """The dtype autocast casts fp32 convolution and matmul inputs to on `device`, or None when it is off there."""
    kind = torch.device(device).type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None
