"""python -m paper_repro.baseline: torchvision's AlexNet, trained with torchvision's reference recipe, on a store.

The baseline a user would otherwise run: torchvision's references/classification/train.py with
`--model alexnet --lr 1e-2` (its README's AlexNet line): SGD, lr 0.01, momentum 0.9, weight decay
1e-4, lr /10 every 30 epochs, a global batch of 256 (8 GPUs x 32), RandomResizedCrop(224) and
horizontal flips, ImageNet mean/std normalisation. It reads the same 256x256 store as our training
and is scored by the same ten-view test (evaluate.evaluate), so the two sit side by side in
results/real_photos.md. One JSON line per epoch in RUN/log.jsonl and one per read-back in
RUN/steps.jsonl, as train writes; RUN/checkpoint.pt at each epoch's end (rerun to continue).
"""
import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torchvision.transforms import v2
from tqdm import tqdm

from paper_repro.core import cli
from paper_repro.core.atomic import atomic_write_json
from paper_repro.core.cli import checked
from paper_repro.core.devices import choose_devices
from paper_repro.data.loader import BatchLoader, epoch_order
from paper_repro.data.store import ImageNetStore, check_trainable
from paper_repro.evaluate import evaluate
from paper_repro.nets.checkpoint import CHECKPOINT, existing_checkpoints, load_run_checkpoint, save_checkpoint
from paper_repro.training.engine import format_duration
from paper_repro.training.run_state import append_log, rng_state, set_rng_state, truncate_log

PROG = "paper_repro.baseline"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Normalised(torch.nn.Module):
    """torchvision's AlexNet behind its reference normalisation, taking 0-255 patches as our nets do."""

    def __init__(self, num_classes, device="cpu"):
        super().__init__()
        self.net = torchvision.models.alexnet(num_classes=num_classes)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)
        self.devices, self._classes = (str(device),), num_classes
        self.to(device)

    def forward(self, x):
        """Logits of 0-255 N x 3 x 224 x 224 patches."""
        return self.net((x - self.mean) / self.std)

    def config(self):
        """What evaluate.evaluate asks of a net."""
        return {"num_classes": self._classes, "input_size": 224}


class ReferenceTrainCrops:
    """torchvision's reference training transform: RandomResizedCrop(224) and a horizontal flip, per image."""

    def __init__(self):
        self.crop = v2.Compose([v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip()])

    def __call__(self, images):
        """0-255 float N x 3 x 224 x 224 from a uint8 N x H x W x 3 batch."""
        return torch.stack([self.crop(image.permute(2, 0, 1)) for image in images]).float()


def len_epoch(store, batch_size):
    """Batches in one epoch of `store`."""
    return -(-len(store) // batch_size)


def budget_exceeded(elapsed_s, epoch_s, val_s, minutes):
    """Whether one more epoch like the last, then a ten-view test (ten centre passes), would end past `minutes`."""
    return elapsed_s + epoch_s + 10 * val_s > 60 * minutes


def get_args_parser():
    """The baseline's flags (defaults: torchvision's reference recipe for AlexNet)."""
    p = argparse.ArgumentParser(prog="python -m paper_repro.baseline", description=__doc__.splitlines()[0],
                                formatter_class=cli.HelpFormatter)
    p.add_argument("--data", metavar="STORE", required=True,
                   help="image store written by data_prep/build_imagenet.py; required")
    p.add_argument("--out", metavar="RUN", required=True,
                   help="run folder: log.jsonl, steps.jsonl, checkpoint.pt, eval JSON; required")
    p.add_argument("--gpus", default=None, help="the one device torchvision's AlexNet runs on: '0' (cuda:0) or "
                   "'cpu'. Given, it is used or refused; without it: '0' where this machine has a GPU, 'cpu' where "
                   "it has none; the first line says which")
    p.add_argument("--epochs", type=int, default=90, help="epochs to train")
    p.add_argument("--minutes", type=float, default=None,
                   help="wall-clock budget of this command, its final ten-view test included: no epoch starts "
                   "that would end past it (the last epoch's time and ten times its centre-patch validation "
                   "foretell the next and the test), so that the baseline gets the time another run took")
    p.add_argument("--batch-size", type=int, default=256, help="batch (the reference: 8 GPUs x 32)")
    p.add_argument("--lr", type=float, default=0.01, help="initial learning rate (the reference's AlexNet line)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="SGD weight decay")
    p.add_argument("--lr-step", type=int, default=30, help="divide the lr by 10 every this many epochs")
    p.add_argument("--workers", type=int, default=2, help="decoding processes")
    p.add_argument("--log-every", type=int, default=10, help="steps between loss read-backs (steps.jsonl)")
    p.add_argument("--seed", type=int, default=0, help="seed of the init, orders and crops")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm progress bars")
    return p


def main(args):
    """Train, then score with the paper's ten views; return the eval result."""
    started = time.perf_counter()
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size), ("--log-every", args.log_every)):
        if value < 1:
            raise cli.UsageError(f"{flag} {value}: must be an integer >= 1")
    if not args.lr > 0:
        raise cli.UsageError(f"--lr {args.lr}: must be a number > 0")
    if args.minutes is not None and not args.minutes > 0:
        raise cli.UsageError(f"--minutes {args.minutes}: must be a number > 0")
    try:  # the data before the devices: a missing store is the first thing to fix
        train_store, val_store = ImageNetStore(args.data, "train"), ImageNetStore(args.data, "val")
        check_trainable(train_store, args.batch_size)
    except (ValueError, OSError) as e:
        raise cli.UsageError(str(e)) from None
    devices, chosen = checked(choose_devices, args.gpus, "cpu", "torchvision's AlexNet")
    device = devices[0]
    num_classes = len(train_store.classes)
    steps_per_epoch = len_epoch(train_store, args.batch_size)
    print(f"baseline {args.out}: torchvision's AlexNet, its reference recipe, on {len(train_store)} training images "
          f"of {num_classes} classes (val: {len(val_store)}) from {args.data} | {steps_per_epoch} steps of "
          f"{args.batch_size} images per epoch, {args.epochs} epoch{'s' if args.epochs != 1 else ''} | device {device} "
          f"({chosen})", flush=True)
    torch.manual_seed(args.seed)
    model = Normalised(num_classes, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.lr_step, gamma=0.1)
    ckpt_path, epoch = os.path.join(args.out, CHECKPOINT), 0
    if existing_checkpoints(args.out):
        ckpt, _ = checked(load_run_checkpoint, args.out)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["schedule"])
        set_rng_state(ckpt["rng"])
        epoch = ckpt["epoch"]
        truncate_log(os.path.join(args.out, "log.jsonl"), epoch)  # lines a kill left after the checkpoint
        truncate_log(os.path.join(args.out, "steps.jsonl"), epoch * len_epoch(train_store, args.batch_size), key="step")
        print(f"resuming {args.out} after epoch {epoch} (epochs done: {epoch})")
    atomic_write_json(os.path.join(args.out, "config.json"), dict(vars(args), recipe="torchvision reference "
                      "(references/classification, --model alexnet --lr 1e-2)", num_classes=num_classes))
    loader = BatchLoader(train_store, [], args.batch_size, workers=args.workers, pin_memory=device != "cpu")
    crops = ReferenceTrainCrops()
    stopped_by_clock = False
    while epoch < args.epochs:
        epoch_started = time.perf_counter()
        model.train()
        loader.set_indices(epoch_order(len(train_store), args.seed, epoch))
        loss_sum, images, seconds, window = 0.0, 0, 0.0, []
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch", disable=not args.progress,
                   dynamic_ncols=True)
        for step, (batch, labels) in enumerate(bar, 1):
            start = time.perf_counter()
            loss = F.cross_entropy(model(crops(batch).to(device, non_blocking=True)), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seconds += time.perf_counter() - start
            window.append(float(loss.detach()) * len(labels))
            loss_sum, images = loss_sum + window[-1], images + len(labels)
            if step % args.log_every == 0 or step == len(loader):
                n = args.batch_size * (len(window) - 1) + len(labels)
                append_log(os.path.join(args.out, "steps.jsonl"),
                           {"step": epoch * len(loader) + step, "epoch": epoch + 1, "loss": sum(window) / n})
                steps_left = len(loader) - step + (args.epochs - epoch - 1) * len(loader)
                bar.set_postfix({"loss": f"{sum(window) / n:.4f}", "run left": format_duration(
                    seconds / step * steps_left)})  # training steps only; validation adds a little
                window = []
        lr = optimizer.param_groups[0]["lr"]  # this epoch's, before the schedule moves it
        schedule.step()
        epoch += 1
        val_started = time.perf_counter()
        probs = evaluate([model], val_store, np.zeros((256, 256, 3), np.float32), views=1, workers=args.workers,
                         progress=False)
        val_seconds = time.perf_counter() - val_started
        val_top1 = float((probs.argmax(1) != torch.as_tensor(val_store.labels)).float().mean())  # probs: on the CPU
        append_log(os.path.join(args.out, "log.jsonl"), {
            "epoch": epoch, "train_loss": loss_sum / images, "val_top1_error": val_top1,
            "images_per_s": images / seconds, "train_images": images, "lr": lr})
        save_checkpoint(ckpt_path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                    "schedule": schedule.state_dict(), "rng": rng_state(), "epoch": epoch})
        tqdm.write(f"epoch {epoch}/{args.epochs}: train loss {loss_sum / images:.4f} | val top-1 (centre) "
                   f"{val_top1:.4f} | "
                   f"{images / seconds:.0f} img/s (training steps)")
        if args.minutes is not None and epoch < args.epochs:
            now = time.perf_counter()
            if budget_exceeded(now - started, now - epoch_started, val_seconds, args.minutes):
                stopped_by_clock = True
                tqdm.write(f"baseline {args.out}: --minutes {args.minutes:g}: another epoch and the ten-view test "
                           f"would end past the budget; stopping after epoch {epoch}")
                break
    probs = evaluate([model], val_store, np.zeros((256, 256, 3), np.float32), views=10, workers=args.workers,
                     progress=args.progress)
    labels = torch.as_tensor(val_store.labels)
    top5 = probs.topk(min(5, num_classes), dim=1).indices
    result = {"top1_error": float((probs.argmax(1) != labels).float().mean()),
              "top5_error": float((~(top5 == labels[:, None]).any(1)).float().mean()),
              "views": 10, "images": len(val_store), "epochs_done": epoch,
              "stopped_by_clock": stopped_by_clock}
    eval_json = os.path.join(args.out, "eval_val_10view.json")
    atomic_write_json(eval_json, result)
    print(f"baseline {args.out}: done after epoch {epoch} (epochs done: {epoch}) in "
          f"{format_duration(time.perf_counter() - started)}; ten-view val top-1 error "
          f"{100 * result['top1_error']:.2f} %, top-5 {100 * result['top5_error']:.2f} % -> {eval_json}", flush=True)
    return result


if __name__ == "__main__":
    cli.run(PROG, lambda: main(get_args_parser().parse_args()))
    cli.leave()
