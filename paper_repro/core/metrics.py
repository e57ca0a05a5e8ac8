"""Top-k predictions and errors, with a fixed rule for ties (the lower class index wins)."""
import torch


def topk_predictions(scores, k=5):
    """Return the k best class indices per row, best first; equal scores rank the lower index first."""
    k = min(k, scores.shape[1])
    # A stable descending sort keeps equal scores in index order, so ties are reproducible
    # (torch.topk makes no promise about the order of ties).
    return torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]


def topk_errors(predictions, labels, ks=(1, 5)):
    """Return {k: number of rows whose label is not among the first k predictions}."""
    hits = predictions == labels.view(-1, 1)
    return {k: int((~hits[:, :k].any(dim=1)).sum()) for k in ks}
