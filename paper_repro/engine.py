"""One training epoch and the per-epoch centre-patch validation."""
import math
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .augment import batch_generator
from .distributed import all_reduce_sum
from .metrics import topk_errors, topk_predictions


class Stopped(Exception):
    """Raised after the checkpoint a stop request (SIGTERM, Ctrl-C) asked for has been written."""


class EpochTotals:
    """Running sums over one epoch's training steps; kept in mid-epoch checkpoints so resumed logs match."""

    def __init__(self, loss_sum=0.0, errors=0, images=0, seconds=0.0):
        self.loss_sum, self.errors, self.images, self.seconds = loss_sum, errors, images, seconds

    def state_dict(self):
        """Plain numbers (weights_only-safe)."""
        return dict(loss_sum=self.loss_sum, errors=self.errors, images=self.images, seconds=self.seconds)


def stall_message(mean_loss, num_classes, steps):
    """A warning if the training loss still sits at ln(num_classes) (uniform guessing), else None."""
    chance = math.log(num_classes)
    if abs(mean_loss - chance) > 0.01 * chance:
        return None
    return (f"training loss {mean_loss:.4f} is still at ln({num_classes}) = {chance:.4f} after {steps} steps: the net "
            f"outputs uniform probabilities and is not learning. Likely causes: the paper's init (N(0, 0.01) "
            f"weights with bias 1 in conv2, conv4, conv5, fc6, fc7) is known to stall in some setups; the "
            f"learning rate; the LRN convention. Fixes: --bias-init 0.1 (the common one), a different --lr "
            f"(e.g. half or double), --lrn code. Stop this run and restart with one of them.")


def _autocast(device, bf16):
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=bf16)


def train_one_epoch(model, optimizer, loader, augment, *, device, epoch, seed, totals, rank=0, bf16=False,
                    checkpoint_every=0, save=None, stop_requested=None, log_every=10, monitor=None,
                    show_progress=True):
    """Train over `loader` (from its start batch), updating `totals`; return totals.

    save(step) writes a checkpoint after `step` batches of this epoch: every `checkpoint_every`
    global steps, and before raising Stopped when stop_requested(step) says so. Losses are read
    back every `log_every` steps (and before any save): a NaN/Inf stops the run with a message;
    monitor(mean_loss_since_last_read, global_step) sees each read (the stall check).
    """
    model.train()
    steps_per_epoch = len(loader)
    bar = tqdm(total=steps_per_epoch, initial=loader.start, desc=f"epoch {epoch + 1}", unit="batch",
               disable=not show_progress, dynamic_ncols=True)
    pending, step, started = [], loader.start, time.perf_counter()
    seconds_before = totals.seconds
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        x = augment(images, batch_generator(seed, epoch, step, rank))
        with _autocast(device, bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        wrong = (topk_predictions(logits.detach(), k=1)[:, 0] != labels).sum()
        pending.append((loss.detach() * len(labels), wrong, len(labels)))

        global_step = epoch * steps_per_epoch + step
        want_save = save is not None and checkpoint_every > 0 and global_step % checkpoint_every == 0
        stop = stop_requested is not None and stop_requested(step)
        if want_save or stop or step % log_every == 0 or step == steps_per_epoch:
            window_loss = _flush(pending, totals, epoch, step)
            totals.seconds = seconds_before + time.perf_counter() - started
            rate = totals.images / max(totals.seconds, 1e-9)
            bar.set_postfix(loss=f"{window_loss:.4f}", img_s=f"{rate:.0f}")
            if monitor is not None:
                monitor(window_loss, global_step)
        bar.update(1)
        if want_save or stop:
            save(step)
        if stop:
            bar.close()
            raise Stopped(f"stopped at epoch {epoch + 1}, batch {step}/{steps_per_epoch}")
    bar.close()
    totals.seconds = seconds_before + time.perf_counter() - started
    return totals


def _flush(pending, totals, epoch, step):
    """Add the pending per-step sums to totals (one device sync); raise on a non-finite loss."""
    if not pending:
        return float("nan")
    losses = torch.stack([p[0].float() for p in pending]).cpu()
    wrong = int(torch.stack([p[1] for p in pending]).sum())
    n = sum(p[2] for p in pending)
    if not torch.isfinite(losses).all():
        bad = losses[~torch.isfinite(losses)][0].item()
        raise FloatingPointError(
            f"training loss became {bad} at epoch {epoch + 1}, batch {step}: the run diverged. Nothing after "
            f"the last checkpoint was saved. Try a lower --lr, --bias-init 0.1, or without --bf16; then "
            f"start again (or --resume from the checkpoint if it predates the divergence).")
    totals.loss_sum += float(losses.double().sum())
    totals.errors += wrong
    totals.images += n
    pending.clear()
    return float(losses.double().sum()) / n


@torch.no_grad()
def evaluate_centre(model, loader, transform, *, device, bf16=False, show_progress=True):
    """Centre-patch top-1/top-5 error and mean loss over `loader` (summed over all processes)."""
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # images, top-1 errors, top-5 errors, loss sum
    for images, labels in tqdm(loader, desc="val", unit="batch", disable=not show_progress, leave=False,
                               dynamic_ncols=True):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with _autocast(device, bf16):
            logits = model(transform(images))
        errors = topk_errors(topk_predictions(logits.float(), k=5), labels, ks=(1, 5))
        loss = F.cross_entropy(logits.float(), labels, reduction="sum")
        sums += torch.tensor([len(labels), errors[1], errors[5], loss.item()], dtype=torch.float64)
    n, e1, e5, loss_sum = all_reduce_sum(sums.tolist(), device=device)
    n = max(n, 1)
    return dict(val_top1_error=e1 / n, val_top5_error=e5 / n, val_loss=loss_sum / n, val_images=int(n))
