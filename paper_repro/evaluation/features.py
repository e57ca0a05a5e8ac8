"""fc7 features and the nearest-neighbour search of Figure 4 (section 6.1: Euclidean distance between fc7 vectors)."""
import numpy as np
import torch
from tqdm import tqdm

from paper_repro.data.loader import image_batches
from paper_repro.data.views import TenViews


def fc7_features(model, store, indices, mean_image, batch_size=64, workers=0, progress=True):
    """fc7 vectors (post-ReLU) of the centre patches of store[indices], in eval mode."""
    model.eval()
    device = torch.device(model.devices[0])
    cut = TenViews(mean_image, model.config().get("input_size", 224), views=1)
    feats = []
    with torch.inference_mode(), tqdm(total=len(indices), unit="img", desc=f"fc7 ({store.split})",
                                      disable=not progress, dynamic_ncols=True) as bar:
        for images, _ in image_batches(store, indices, batch_size, workers, pin_memory=device.type == "cuda"):
            feats.append(model.fc7_features(cut(images.to(device, non_blocking=True))).float())
            bar.update(images.shape[0])
    return torch.cat(feats).cpu()  # one copy back at the end, not one per batch


def nearest_neighbours(model, val, train, mean_image, queries=5, pool=5000, k=6, seed=0, workers=0, progress=True):
    """For `queries` val images, the k training images (of `pool` searched) nearest in fc7; Euclidean.

    Returns ([{"val": index, "train": [indices, nearest first], "dist": [distances]}], images searched).
    """
    q_idx = np.unique(np.linspace(0, len(val) - 1, min(queries, len(val))).round().astype(np.int64))
    rng = np.random.default_rng(seed)
    p_idx = np.sort(rng.choice(len(train), size=min(pool, len(train)), replace=False))
    fq = fc7_features(model, val, q_idx, mean_image, workers=workers, progress=progress)
    fp = fc7_features(model, train, p_idx, mean_image, workers=workers, progress=progress)
    dist = torch.cdist(fq.double(), fp.double())
    order = torch.sort(dist, dim=1, stable=True).indices[:, :k]
    return [
        {"val": int(q), "train": [int(p_idx[j]) for j in row], "dist": [float(dist[i, j]) for j in row]}
        for i, (q, row) in enumerate(zip(q_idx, order.tolist()))
    ], len(p_idx)
