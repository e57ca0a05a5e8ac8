"""The paper's test: softmax averaged over the ten views of each image, then over the nets."""
import os

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from paper_repro.data.cifar_views import eval_views
from paper_repro.data.loader import image_batches
from paper_repro.data.store import ImageNetStore
from paper_repro.data.views import TenViews


def open_store(root, split):
    """Open STORE's split with a clear error when the split is missing or empty."""
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"--data {root}: no such directory; pass the STORE that data_prep/build_imagenet.py wrote")
    try:
        store = ImageNetStore(root, split)
    except ValueError as e:
        raise ValueError(f"cannot evaluate --split {split}: {e}") from e
    if len(store) == 0:
        raise ValueError(f"cannot evaluate --split {split}: split {split!r} of image store {root} is empty (0 images)")
    return store


def average_views(probs):
    """Mean over dim 1 of N x V x C, adding the views one by one so equal inputs give equal outputs (exact ties)."""
    # Tensor.mean's vectorised reduction rounds differently in different class columns, which would
    # break exact ties between classes (and so the lower-index-first rule) by rounding noise.
    total = probs[:, 0].clone()
    for v in range(1, probs.shape[1]):
        total += probs[:, v]
    return total / probs.shape[1]


def _view_buffer(buffers, key, count, device):
    """A float32 count x 3 x size x size CPU tensor reused across batches (None on a GPU): a fresh
    100+ MB allocation per batch would cost more in page faults than cutting the views does."""
    if device.type != "cpu":
        return None
    size = key[1]
    need = count * 3 * size * size
    if key not in buffers or buffers[key].numel() < need:
        buffers[key] = torch.empty(need)
    return buffers[key][:need].view(count, 3, size, size)


def _view_key(model, mean_crop=None):
    """(data path, patch size, mean crop) of a net's test views: the paper's patches, with the mean its training
    subtracted (mean_crop None: as its checkpoint says), or a CIFAR net's own data path (config["input"])."""
    config = model.config()
    if mean_crop is None:
        mean_crop = getattr(model, "checkpoint_info", {}).get("mean_crop", "position")
    return config.get("input", "paper"), config.get("input_size", 224), mean_crop


def views_of(config, views=None):
    """The views per image a net with model_config `config` is tested with (views None: its data path's own)."""
    if config.get("input", "paper") == "whole":
        if views not in (None, 1):
            raise ValueError(f"a net trained on whole images ({config.get('net')}) has one test view, not {views}; "
                             f"drop --views")
        return 1
    return 10 if views is None else views


def _cutter(key, mean_image, views):
    """(the cutter of a view key, views per image); views None: the data path's own number (10; whole images 1)."""
    kind, size, mean_crop = key
    if kind == "paper":
        views = 10 if views is None else views
        return TenViews(mean_image, size, views, mean_crop=mean_crop), views
    return eval_views(kind, np.asarray(mean_image), size, views)


# On the CPU a batch's ten views (1,280 patches) go through the net this many at a time: the
# activations of 128 patches stay in cache between layers, those of 1,280 do not, and the whole
# forward was 1.2-1.6x slower at once (width 0.5, 2 threads, a loaded machine; results/benchmarks.md).
# Pieces of 256 gave bitwise the logits of one call there; the tests allow 1e-5. A GPU takes the whole batch.
CPU_PIECE = 128


def forward_in_pieces(model, x, piece):
    """model(x) computed `piece` rows at a time (all at once when piece is None or x is no larger)."""
    if piece is None or len(x) <= piece:
        return model(x)
    return torch.cat([model(x[i:i + piece]) for i in range(0, len(x), piece)])


def evaluate(models, store, mean_image, views=10, batch_size=128, workers=0, bf16=False, progress=True,
             decode="cpu", indices=None, mean_crop=None):
    """Return float32 probabilities N x C (CPU): softmax averaged over the views, then over the models.

    views: 10 or 1, or None for each net's own test (the paper's ten; a CIFAR net's data path says, config["input"]).
    indices: the store's images to score, in this order (None: all); row i of the result is image indices[i].
    mean_crop: how the nets' training subtracted the mean ("centre" or "position"); None: as each net's
    checkpoint says (load_model's checkpoint_info; "position" for a bare state_dict).

    The probabilities stay on the device until the last batch is done and come back in one copy:
    the host never waits for the device inside the loop.
    """
    if not models:
        raise ValueError("evaluate needs at least one model")
    classes = {m.config()["num_classes"] for m in models}
    if len(classes) != 1:
        raise ValueError(f"the checkpoints disagree on the number of classes: {sorted(classes)}")
    num_classes = classes.pop()
    device = torch.device(models[0].devices[0])
    cutters, keys = {}, []  # one cutter per (data path, patch size): the nets that share one share its patches
    for m in models:
        keys.append(_view_key(m, mean_crop))
        if keys[-1] not in cutters:
            cutters[keys[-1]] = _cutter(keys[-1], mean_image, views)
    indices = np.arange(len(store)) if indices is None else np.asarray(indices, dtype=np.int64)
    probs = torch.zeros(len(indices), num_classes, dtype=torch.float32, device=device)
    start, buffers = 0, {}
    batches = image_batches(store, indices, batch_size, workers, pin_memory=device.type == "cuda",
                            decode=decode, device=device)
    counts = "/".join(str(v) for v in sorted({v for _, v in cutters.values()}))
    bar = tqdm(total=len(indices), unit="img", desc=f"evaluate ({counts} view{'' if counts == '1' else 's'})",
               disable=not progress, dynamic_ncols=True)
    with torch.inference_mode():
        for images, _ in batches:
            images = images.to(device, non_blocking=True)
            n = images.shape[0]
            patches = {key: cut(images, out=_view_buffer(buffers, key, n * v, device))
                       for key, (cut, v) in cutters.items()}  # cut once per data path, patch size and mean
            total = torch.zeros(n, num_classes, dtype=torch.float32, device=device)
            for m, key in zip(models, keys):
                x, v = patches[key], cutters[key][1]
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = forward_in_pieces(m, x, CPU_PIECE if device.type == "cpu" else None)
                total += average_views(F.softmax(logits.float(), dim=1).view(n, v, num_classes))
            probs[start:start + n] = total / len(models)
            start += n
            bar.update(n)
    bar.close()
    return probs.cpu()
