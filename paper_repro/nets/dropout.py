"""Dropout as the paper (section 4.2) and the authors' code scale it, beside torch's inverted dropout."""
import torch
from torch import nn


class TestScaledDropout(nn.Module):
    """Dropout as the paper and the authors' code have it: masks in training, outputs x (1 - p) at test.

    torch's nn.Dropout is "inverted" (x 1/(1 - p) in training, nothing at test): the same net at test
    time, but in training the layers after it see twice the activations and their weights learn a
    quarter as fast in function terms, which is not the recipe.
    """

    def __init__(self, p=0.5):
        """Drop with probability `p` in training."""
        super().__init__()
        self.p = p

    def forward(self, x):
        """x times a Bernoulli(1 - p) mask in training; x * (1 - p) in eval mode."""
        if self.p == 0:
            return x
        if not self.training:
            return x * (1 - self.p)
        return x * torch.empty_like(x).bernoulli_(1 - self.p)

    def extra_repr(self):
        """Show p in print(model)."""
        return f"p={self.p}"


def make_dropout(p, scaling):
    """The dropout module for `scaling`: "test" (the paper's) or "inverted" (torch's nn.Dropout)."""
    return TestScaledDropout(p) if scaling == "test" else nn.Dropout(p)
