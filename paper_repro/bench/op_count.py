"""Counting the aten operators a step dispatches and the bytes they touch (the CPU path and, on meta tensors, the GPU's)."""
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class OpCounter(TorchDispatchMode):
    """Counts the aten operators dispatched while it is active that compute or allocate, and the bytes they touch.

    A TorchDispatchMode sees every operator below autograd, the backward's included. Not counted:
    views (they alias, no kernel runs) and queries that return no tensor. `bytes` adds, per operator,
    the size of every distinct tensor it reads and of every tensor it writes (an in-place operand
    is read and written; an out= tensor is only written; empty* allocate and touch nothing).
    """

    UNTOUCHED = ("aten::empty", "aten::empty_like", "aten::empty_strided", "aten::new_empty",
                 "aten::new_empty_strided")

    def __init__(self):
        """Start from zero."""
        super().__init__()
        self.ops, self.bytes = Counter(), 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        """Run `func` and count it if it computes or allocates."""
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        written = _distinct(t for t in tree_leaves(out) if isinstance(t, torch.Tensor))
        if func.namespace == "aten" and not func.is_view and (written or func._schema.is_mutable):
            self.ops[str(func)] += 1
            inputs = _distinct(t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor))
            in_place = func._schema.name.endswith("_")  # aten::mul_ ...: its first operand is read, then written
            read = [t for key, t in inputs.items() if key not in written or in_place]
            if func._schema.name not in self.UNTOUCHED:
                self.bytes += sum(t.numel() * t.element_size() for t in [*read, *written.values()])
        return out

    def total(self):
        """Operators counted."""
        return sum(self.ops.values())


def _distinct(tensors):
    """{memory key: tensor}: two views of the same elements count once."""
    return {(t.device, t.data_ptr() if t.device.type != "meta" else id(t), tuple(t.shape), t.stride(), t.dtype): t
            for t in tensors}
