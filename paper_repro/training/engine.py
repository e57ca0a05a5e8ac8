"""One training epoch and the per-epoch centre-patch validation, with the time left for the epoch and the run."""
import contextlib
import math
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from paper_repro.core import faults
from paper_repro.core.cli import RunFailed
from paper_repro.core.metrics import topk_predictions
from paper_repro.core.numbering import position
from paper_repro.data.augment import batch_generator
from paper_repro.training.distributed import all_reduce_sum, first_error


class Diverged(RunFailed, FloatingPointError):
    """The training loss became NaN or infinite (raised on every process at once)."""


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
            f"outputs uniform probabilities and is not learning yet. The usual cause is the paper's init, bias 1 in "
            f"conv2, conv4, conv5, fc6, fc7: on Tiny ImageNet it sat at chance for a whole epoch where bias 0.1 "
            f"left it after about 100 steps (results/real_photos.md); also the learning rate, or an --lrn other "
            f"than the default (code). Fixes: --bias-init 0.1 (the common one), a lower --lr (e.g. half). A run "
            f"may still leave chance later; if the loss has not moved in a few hundred more steps, restart with "
            f"one of them.")


class StallCheck:
    """Called with each loss read-back; returns the stall warning once, at the first read at or after `after_steps`."""

    def __init__(self, num_classes, after_steps):
        self.num_classes, self.after_steps, self.done = num_classes, after_steps, not after_steps

    def __call__(self, mean_loss, global_step):
        """The warning text the first time the check is due and the loss is at chance, else None."""
        if self.done or global_step < self.after_steps:
            return None
        self.done = True  # one verdict per run: a run that has left chance is not warned later
        return stall_message(mean_loss, self.num_classes, global_step)


def format_duration(seconds):
    """A time span for people: "48 s", "3 min 12 s", "2 h 05 min"."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _autocast(device, bf16):
    # No autocast object at all when off: torch.autocast refuses some device types (meta) even disabled.
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def train_step(model, optimizer, images, labels, augment, generator, *, device, bf16=False):
    """One SGD step of section 5 on a uint8 batch: augment, forward, loss, backward, update.

    Returns (loss summed over the batch, number of top-1 errors) as 0-d tensors on `device`,
    without reading them back: the host never waits for the device inside a step.
    """
    images = images.to(device, non_blocking=True)
    labels = labels.to(device, non_blocking=True)
    x = augment(images, generator)
    with _autocast(device, bf16):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    wrong = (logits.detach().argmax(1) != labels).sum()  # argmax, not a sort: the first maximum, as topk_predictions
    return loss.detach() * len(labels), wrong


def train_one_epoch(model, optimizer, loader, augment, *, device, epoch, seed, totals, rank=0, bf16=False,
                    checkpoint_every=0, save=None, stop_requested=None, log_every=10, monitor=None,
                    show_progress=True, steps_before=0, epochs=None, run_left=None):
    """Train over `loader` (from its start batch), updating `totals`; return totals.

    save(step) writes a checkpoint after `step` batches of this epoch: every `checkpoint_every`
    global steps, and before raising Stopped when stop_requested(step) says so. Losses are read
    back every `log_every` steps (and before any save): a NaN/Inf stops the run with a message;
    monitor(mean_loss_since_last_read, global_step) sees each read (the stall check). Global steps count
    from `steps_before`, the training steps of the epochs before this one. The progress bar shows
    the epoch's time left (tqdm's) and, at each read, the run's: run_left(seconds per step, steps left
    in this epoch) -> seconds. `epochs` (the run's last epoch) only labels the bar.
    """
    model.train()
    steps_per_epoch = len(loader)
    bar = tqdm(total=steps_per_epoch, initial=loader.start, unit="batch", disable=not show_progress,
               desc=f"epoch {epoch + 1}" + (f"/{epochs}" if epochs else ""), dynamic_ncols=True)
    pending, step, started = [], loader.start, time.perf_counter()
    seconds_before = totals.seconds
    for images, labels in loader:
        loss_sum, wrong = train_step(model, optimizer, images, labels, augment,
                                     batch_generator(seed, epoch, step, rank), device=device, bf16=bf16)
        step += 1
        faults.point("step")
        pending.append((loss_sum, wrong, len(labels)))

        global_step = steps_before + step
        # Not at the epoch's last step: the epoch-end checkpoint follows validation anyway.
        want_save = (save is not None and checkpoint_every > 0 and global_step % checkpoint_every == 0
                     and step < steps_per_epoch)
        stop = stop_requested is not None and stop_requested(step)
        if want_save or stop or step % log_every == 0 or step == steps_per_epoch:
            window_loss = _flush(pending, totals, epoch, step, device)
            totals.seconds = seconds_before + time.perf_counter() - started
            rate = totals.images / max(totals.seconds, 1e-9)
            postfix = {"loss": f"{window_loss:.4f}", "img/s": f"{rate:.0f}"}
            if run_left is not None:
                per_step = (time.perf_counter() - started) / (step - loader.start)
                postfix["run left"] = format_duration(run_left(per_step, steps_per_epoch - step))
            bar.set_postfix(postfix)
            if monitor is not None:
                monitor(window_loss, global_step)
        bar.update(1)
        if want_save or stop:
            save(step)
        if stop:
            bar.close()
            raise Stopped(f"stopped {position(epoch, step)} (of its {steps_per_epoch} batches)")
    bar.close()
    totals.seconds = seconds_before + time.perf_counter() - started
    return totals


def _flush(pending, totals, epoch, step, device):
    """Add the pending per-step sums to totals (one device read); every process raises if any saw a non-finite loss."""
    if not pending:
        return float("nan")
    losses = torch.stack([p[0].float() for p in pending]).cpu()
    wrong = int(torch.stack([p[1] for p in pending]).sum())
    n = sum(p[2] for p in pending)
    finite = torch.isfinite(losses)
    mine = None
    if not finite.all():
        mine = (f"training loss became {float(losses[~finite][0])} by batch {step} of epoch {epoch + 1}: the run "
                f"diverged. Nothing after the last checkpoint was saved. Try a lower --lr, --bias-init 0.1, or "
                f"without --bf16; then start again (or --resume from the checkpoint if it predates the divergence).")
    # Every process flushes at the same steps; agreeing here means every process stops at once and none
    # is left waiting in the next all-reduce for a peer that has already gone.
    message = first_error(mine, device)
    if message:
        raise Diverged(message)
    totals.loss_sum += float(losses.double().sum())
    totals.errors += wrong
    totals.images += n
    pending.clear()
    return float(losses.double().sum()) / n


@torch.no_grad()
def evaluate_centre(model, loader, transform, *, device, bf16=False, show_progress=True):
    """Centre-patch top-1/top-5 error and mean loss over `loader` (summed over all processes)."""
    model.eval()
    # Summed on the device, read once at the end: no host synchronisation per batch.
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # images, top-1 errors, top-5 errors, loss sum
    for images, labels in tqdm(loader, desc="val", unit="batch", disable=not show_progress, leave=False,
                               dynamic_ncols=True):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with _autocast(device, bf16):
            logits = model(transform(images)).float()
        faults.point("val")
        hits = topk_predictions(logits, k=5) == labels[:, None]  # ties to the lower index, as evaluate
        # torch.full, not torch.tensor: on a GPU that would be a blocking host-to-device copy per batch
        sums += torch.stack([torch.full((), float(len(labels)), dtype=torch.float64, device=device),
                             (logits.argmax(1) != labels).sum().double(), (~hits.any(1)).sum().double(),
                             F.cross_entropy(logits, labels, reduction="sum").double()])
    n, e1, e5, loss_sum = all_reduce_sum(sums.tolist(), device=device)
    n = max(n, 1)
    return dict(val_top1_error=e1 / n, val_top5_error=e5 / n, val_loss=loss_sum / n, val_images=int(n))
