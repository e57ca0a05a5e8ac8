"""python -m paper_repro.train: the paper's training on two GPUs, one GPU, the CPU, or a torchrun cluster."""
import argparse
import json
import os
import random
import signal
import sys

import numpy as np
import torch
from tqdm import tqdm

from . import distributed as dist_utils
from .augment import CentrePatch, TrainPatch
from .checkpoint import atomic_write, atomic_write_json, load_checkpoint, save_checkpoint
from .devices import HELP as GPUS_HELP
from .devices import parse_gpus
from .engine import EpochTotals, Stopped, evaluate_centre, stall_message, train_one_epoch
from .loader import BatchLoader, shard_order, split_order
from .optim import PaperSGD
from .schedule import DROP, STOP, PlateauSchedule, StepSchedule

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
CHECKPOINT = "checkpoint.pt"
PAPER_INIT_STD = 0.01
# Flags that may differ when a run is resumed; every other setting is the run's and must stay.
CHANGEABLE_ON_RESUME = {"data", "epochs", "gpus", "workers", "checkpoint_every", "log_every", "stall_steps", "progress",
                        "resume", "auto_resume", "config", "out", "bf16", "channels_last"}

EPILOG = """\
Defaults are the paper's recipe (the authors' code where the two differ); every deviation is a flag.

Many GPUs / machines (torchrun): each process drives its own pair of GPUs (--gpus 0,1 in process
LOCAL_RANK=r means cuda:2r and cuda:2r+1), holding one full two-column replica of the net.
DistributedDataParallel averages the replicas' gradients after every backward pass (NCCL on GPUs,
gloo on the CPU), DistributedSampler gives each process its own shard of every epoch's shuffled
order, --batch-size is the GLOBAL batch (each of W processes takes batch-size/W images, so the
paper's 128 and its learning rate keep their meaning), and only rank 0 writes RUN/. Example, 2
machines x 4 GPUs = 4 replicas:
  torchrun --nnodes 2 --nproc-per-node 2 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
      -m paper_repro.train --data STORE --gpus 0,1 --out RUN

A run leaves RUN/config.json (resolved settings), RUN/log.jsonl (one line per epoch) and
RUN/checkpoint.pt (atomic; every --checkpoint-every steps and each epoch's end). After a crash or
kill, rerun the same command with --resume. SIGTERM or Ctrl-C: a checkpoint, then a clean exit.
"""


class SetupError(Exception):
    """A bad flag, store or run folder: reported as one line (exit status 2), no traceback."""


def get_args_parser(add_help=True):
    """The command-line flags (defaults = the paper's recipe)."""
    p = argparse.ArgumentParser(prog="python -m paper_repro.train", description=__doc__, add_help=add_help,
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("run")
    g.add_argument("--data", help="image store written by data_prep/build_imagenet.py (needs train and val splits)")
    g.add_argument("--out", help="run folder: config.json, log.jsonl, checkpoint.pt")
    g.add_argument("--gpus", default="0,1", help=GPUS_HELP + " (default 0,1: the paper's two GPUs)")
    g.add_argument("--config", help="JSON file of defaults (keys = flag names with _), or a name in "
                                    "paper_repro/configs/ such as alexnet_paper; flags given here override it")
    g.add_argument("--resume", action="store_true",
                   help="continue RUN from RUN/checkpoint.pt (an error if there is none)")
    g.add_argument("--auto-resume", action="store_true", help="continue RUN if it has a checkpoint, else start it")
    g.add_argument("--seed", type=int, default=0, help="seed of the init, the epoch orders, augmentation and dropout")
    g.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="decoding processes per training process (0: decode in the main process)")
    g.add_argument("--checkpoint-every", type=int, default=1000,
                   help="also checkpoint every this many steps (0: only at epoch ends)")
    g.add_argument("--log-every", type=int, default=10, help="steps between loss read-backs (NaN check, progress bar)")
    g.add_argument("--stall-steps", type=int, default=2000,
                   help="warn if the loss is still ln(classes) after this many steps (0: never check)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm progress bars")

    g = p.add_argument_group("learning (section 5)")
    g.add_argument("--epochs", type=int, default=90, help="at most this many epochs (the paper: about 90)")
    g.add_argument("--batch-size", type=int, default=128, help="global batch, over all torchrun processes")
    g.add_argument("--lr", type=float, default=0.01, help="initial learning rate")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight-decay", type=float, default=0.0005)
    g.add_argument("--lr-schedule", choices=("plateau", "step"), default="plateau",
                   help="plateau: divide by 10 when the val top-1 error stops improving, at most --lr-max-drops "
                        "times, then stop at the next plateau (the paper); step: divide after the epochs in "
                        "--lr-drop-epochs (for exact reruns)")
    g.add_argument("--lr-patience", type=int, default=3, help="plateau: epochs without improvement before a drop")
    g.add_argument("--lr-threshold", type=float, default=0.001,
                   help="plateau: an improvement must lower the val top-1 error (a fraction) by more than this")
    g.add_argument("--lr-max-drops", type=int, default=3, help="plateau: drops before the final stop (the paper: 3)")
    g.add_argument("--lr-drop-epochs", default="30,60,80", help="step: comma-separated epochs after which lr /= 10")

    g = p.add_argument_group("net (section 3); the paper's ablations and common fixes")
    g.add_argument("--width", type=float, default=1.0, help="channel multiplier for quick runs (1.0: the paper)")
    g.add_argument("--bias-init", type=float, default=1.0,
                   help="bias of conv2, conv4, conv5, fc6, fc7 (1: the paper; 0.1 fixes runs that stall)")
    g.add_argument("--lrn", choices=("code", "paper", "none"), default="code",
                   help="code: alpha/n as the authors' code; paper: the paper's formula; none: the ablation")
    g.add_argument("--pooling", choices=("overlapping", "non-overlapping"), default="overlapping",
                   help="overlapping 3/2 (the paper) or non-overlapping 2/2 (ablation)")
    g.add_argument("--variant", choices=("two-column", "one-column-half"), default="two-column",
                   help="one-column-half: the paper's one-GPU ablation (half the kernels in conv1-conv4)")
    g.add_argument("--dropout", type=float, default=0.5, help="dropout of fc6 and fc7")
    g.add_argument("--init-std", type=float, default=PAPER_INIT_STD,
                   help="std of the N(0, std) init of every weight (0.01: the paper). Narrow nets (--width w < 1) "
                        "lose the signal on the way up with 0.01; 0.01/sqrt(w) keeps each layer's gain as at width 1")
    g.add_argument("--input-size", type=int, choices=(224, 227), default=224,
                   help="224: the authors' code (conv1 padded to 55); 227: Caffe's crops")

    g = p.add_argument_group("augmentation (section 4)")
    g.add_argument("--colour-noise-scale", choices=("sqrt", "eigval"), default="sqrt",
                   help="sqrt: a_i * sqrt(eigenvalue_i) (the authors' code); eigval: a_i * eigenvalue_i (the "
                        "paper's words; about 1,400 grey levels on the 0-255 scale)")
    g.add_argument("--colour-noise-std", type=float, default=0.1, help="standard deviation of a_i (the paper: 0.1)")
    g.add_argument("--no-colour-noise", dest="colour_noise", action="store_false", help="ablation: no PCA colour noise")

    g = p.add_argument_group("speed (deviations from fp32, off by default)")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast for forward and loss")
    g.add_argument("--channels-last", action="store_true", help="NHWC memory format for activations and weights")
    return p


def _dests(parser):
    return {a.dest: a.default for a in parser._actions if a.dest != "help"}


def _read_config_file(name, allowed):
    path = name if os.path.isfile(name) else os.path.join(CONFIG_DIR, name + ("" if name.endswith(".json") else ".json"))
    if not os.path.isfile(path):
        have = ", ".join(sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".json")))
        raise SetupError(f"--config {name}: no such file, nor a config named so in {CONFIG_DIR} (have: {have})")
    with open(path) as f:
        values = json.load(f)
    values = {k.replace("-", "_"): v for k, v in values.items() if not k.startswith("_")}
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise SetupError(f"--config {path}: unknown key(s) {', '.join(unknown)}; keys are flag names with _ "
                         f"(e.g. batch_size), one of: {', '.join(sorted(allowed))}")
    return values


def parse_args(argv=None):
    """Resolve the settings: flag defaults < --config file < RUN/config.json (when resuming) < flags given."""
    parser = get_args_parser()
    given = parser.parse_args(argv)
    silent = get_args_parser()
    for a in silent._actions:
        a.default = argparse.SUPPRESS
    explicit = vars(silent.parse_args(argv))
    values = _dests(parser)
    if given.config:
        values.update(_read_config_file(given.config, values))
    if not given.out:
        parser.error("--out RUN is required (the run folder)")
    ckpt = os.path.join(given.out, CHECKPOINT)
    resuming = given.resume or (given.auto_resume and os.path.isfile(ckpt))
    if given.resume and not os.path.isfile(ckpt):
        raise SetupError(f"--resume: {ckpt} does not exist, so there is nothing to continue; run without "
                                f"--resume to start this run (or --auto-resume to do either)")
    if resuming:
        with open(os.path.join(given.out, "config.json")) as f:
            saved = {k: v for k, v in json.load(f).items() if k in values}
        for k, v in explicit.items():
            if k not in CHANGEABLE_ON_RESUME and k in saved and saved[k] != v:
                raise SetupError(f"--{k.replace('_', '-')} {v} differs from this run's {saved[k]} "
                                 f"({given.out}/config.json); a resumed run keeps its settings: drop the flag, "
                                 f"or start a new --out")
        values.update(saved)
    values.update(explicit)
    values["resume"] = resuming
    args = argparse.Namespace(**values)
    if not args.data:
        parser.error("--data STORE is required (an image store from data_prep/build_imagenet.py)")
    if not resuming and os.path.isfile(ckpt):
        raise SetupError(f"{ckpt} exists: pass --resume to continue that run, or choose another --out")
    return args


def _check_args(args, world_size):
    if args.batch_size < 1 or args.batch_size % world_size:
        raise SetupError(f"--batch-size {args.batch_size} must be a positive multiple of the {world_size} processes")
    if args.epochs < 1 or args.checkpoint_every < 0 or args.log_every < 1 or args.workers < 0:
        raise SetupError("--epochs and --log-every must be >= 1; --checkpoint-every and --workers >= 0")
    if not 0 < args.width:
        raise SetupError(f"--width {args.width} must be > 0")


def _drop_epochs(text):
    try:
        return [int(e) for e in str(text).split(",") if e.strip()]
    except ValueError:
        raise SetupError(f"--lr-drop-epochs {text!r}: expected comma-separated epochs such as 30,60,80") from None


def make_schedule(args):
    """The learning-rate schedule the flags ask for."""
    if args.lr_schedule == "step":
        return StepSchedule(args.lr, _drop_epochs(args.lr_drop_epochs))
    return PlateauSchedule(args.lr, patience=args.lr_patience, threshold=args.lr_threshold,
                           max_drops=args.lr_max_drops)


def build_model(args, num_classes, devices):
    """The net the flags describe, initialised as the paper (weights rescaled if --init-std differs)."""
    from .model import AlexNet

    model = AlexNet(num_classes=num_classes, devices=devices, width=args.width, input_size=args.input_size,
                    lrn=args.lrn, pooling=args.pooling, variant=args.variant, bias_init=args.bias_init,
                    dropout=args.dropout)
    if args.init_std != PAPER_INIT_STD:
        with torch.no_grad():  # the same draws, rescaled: weights are the parameters with 2 or 4 dims
            for p in model.parameters():
                if p.dim() > 1:
                    p.mul_(args.init_std / PAPER_INIT_STD)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def rng_state():
    """Every RNG's state in weights_only-safe types (tensors, ints, floats)."""
    _, key, pos, has_gauss, cached = np.random.get_state()
    version, mt, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
    }


def set_rng_state(state):
    """Restore what rng_state() returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][:torch.cuda.device_count()])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"]), py["gauss"]))


def _velocity_swap(model, optimizer):
    """(params, velocities): a parameter without state yet has velocity zero (PaperSGD's start)."""
    params = [p for p in model.parameters()]
    vel = [optimizer.state[p]["velocity"] if "velocity" in optimizer.state[p] else torch.zeros_like(p) for p in params]
    return params, vel


def optimizer_state(model, optimizer):
    """The velocities as a canonical state_dict (layout-free: resume may change --gpus) plus the hyperparameters."""
    params, vel = _velocity_swap(model, optimizer)
    weights = [p.data for p in params]
    try:
        for p, v in zip(params, vel):
            p.data = v
        velocity = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    finally:
        for p, w in zip(params, weights):
            p.data = w
    hyper = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    return {"velocity": velocity, "param_groups": hyper}


def load_optimizer_state(model, optimizer, state):
    """Restore what optimizer_state() returned into `optimizer` over `model`."""
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state["velocity"])
    for p in model.parameters():
        optimizer.state[p]["velocity"] = p.detach().clone()
    model.load_state_dict(weights)
    for group, hyper in zip(optimizer.param_groups, state["param_groups"]):
        group.update(hyper)


class StopFlag:
    """SIGTERM / Ctrl-C set a flag (checkpoint, then exit); a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.signal = None
        self._old = {}

    def __enter__(self):
        self._pid = os.getpid()
        for s in (signal.SIGTERM, signal.SIGINT):
            self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if os.getpid() != self._pid:
            return  # a forked DataLoader worker: the main process decides, and shuts it down
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        tqdm.write(f"{self.signal}: finishing this step, writing a checkpoint, then exiting", file=sys.stderr)

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def _rewrite_log(path, epochs_done):
    """Keep the log lines of the epochs the checkpoint has finished (a kill may leave one more)."""
    if not os.path.isfile(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip() and json.loads(line)["epoch"] <= epochs_done]
    atomic_write(path, lambda f: f.writelines(lines), mode="w")


def _append_log(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def main(args):
    """Train as `args` (from parse_args) says; return the last epoch's log record (None if nothing ran)."""
    try:
        devices = parse_gpus(args.gpus)
    except ValueError as e:
        raise SetupError(str(e)) from None
    rank, world_size = dist_utils.init_from_env(devices)
    finished = False
    try:
        with StopFlag() as stop:
            record = _train(args, devices, rank, world_size, stop)  # its DDP model is freed on return
        finished = True
        return record
    finally:
        dist_utils.cleanup(synchronize=finished)


def _train(args, devices, rank, world_size, stop):
    from .data import ImageNetStore, load_stats

    _check_args(args, world_size)
    main_process = rank == 0
    device = devices[0]
    try:
        train_store, val_store = ImageNetStore(args.data, "train"), ImageNetStore(args.data, "val")
        stats = load_stats(args.data)
    except (ValueError, OSError) as e:
        raise SetupError(str(e)) from None
    num_classes = len(train_store.classes)

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)  # the same init on every replica
    model = build_model(args, num_classes, devices)
    torch.manual_seed(args.seed + 7919 * (rank + 1))  # each replica its own dropout masks
    optimizer = PaperSGD(model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    schedule = make_schedule(args)

    run = args.out
    ckpt_path, log_path = os.path.join(run, CHECKPOINT), os.path.join(run, "log.jsonl")
    epoch, start_step, totals, finished = 0, 0, EpochTotals(), False
    if args.resume:
        ckpt = load_checkpoint(ckpt_path)
        for key, have in (("num_classes", num_classes), ("train_images", len(train_store))):
            if ckpt["config"].get(key) != have:
                raise SetupError(f"--data {args.data} has {key} {have}, the run was trained with "
                                 f"{ckpt['config'].get(key)}: resume on the store the run started with")
        model.load_state_dict(ckpt["model"])
        load_optimizer_state(model, optimizer, ckpt["optimizer"])
        schedule.load_state_dict(ckpt["schedule"])
        epoch, start_step, finished = ckpt["epoch"], ckpt["step"], ckpt["finished"]
        totals = EpochTotals(**ckpt["totals"])
        rngs = ckpt["rng"]
        if len(rngs) == world_size:
            set_rng_state(rngs[rank])
        elif main_process:
            tqdm.write(f"note: the checkpoint has {len(rngs)} processes' RNG states, this run {world_size}; "
                       f"dropout masks will differ from an uninterrupted run", file=sys.stderr)
        if main_process:
            _rewrite_log(log_path, epoch)
            print(f"resuming {run} at epoch {epoch + 1}, batch {start_step} (from {ckpt_path})", flush=True)
    for group in optimizer.param_groups:
        group["lr"] = schedule.lr

    config = {k: v for k, v in vars(args).items()}
    config.update(model_config=model.config(), world_size=world_size, devices=list(devices),
                  num_classes=num_classes, train_images=len(train_store), val_images=len(val_store),
                  torch_version=str(torch.__version__))
    if main_process:
        atomic_write_json(os.path.join(run, "config.json"), config)

    ddp_model = dist_utils.wrap(model)
    train_loader = BatchLoader(train_store, [], args.batch_size // world_size, workers=args.workers,
                               pin_memory=device.startswith("cuda"))
    val_loader = BatchLoader(val_store, split_order(len(val_store), rank, world_size), args.batch_size // world_size,
                             workers=args.workers, pin_memory=device.startswith("cuda"))
    augment = TrainPatch(stats["mean_image"], stats["pca_eigval"], stats["pca_eigvec"], size=args.input_size,
                         colour_noise=args.colour_noise_scale if args.colour_noise else None,
                         noise_std=args.colour_noise_std, channels_last=args.channels_last)
    centre = CentrePatch(stats["mean_image"], size=args.input_size, channels_last=args.channels_last)

    def save(ep, step, done=False):
        rngs = dist_utils.all_gather_objects(rng_state())
        if main_process:
            save_checkpoint(ckpt_path, {
                "format": 1, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "model_config": model.config(), "optimizer": optimizer_state(model, optimizer),
                "schedule": schedule.state_dict(), "epoch": ep, "step": step, "finished": done,
                "totals": totals.state_dict(), "rng": rngs, "config": config})

    def stop_requested(step):
        if not dist_utils.is_distributed():
            return stop.signal is not None
        return step % args.log_every == 0 and dist_utils.any_process(stop.signal is not None, device)

    warned = []

    def monitor(loss, global_step):
        if not warned and args.stall_steps and global_step >= args.stall_steps:
            msg = stall_message(loss, num_classes, global_step)
            if msg:
                warned.append(msg)
                if main_process:
                    tqdm.write("WARNING: " + msg, file=sys.stderr)

    record = None
    if finished or epoch >= args.epochs:
        if main_process:
            why = "the schedule's last plateau ended it" if finished else "raise --epochs to go on"
            print(f"{run}: finished after {epoch} epochs; nothing to do ({why})")
        return None
    try:
        while epoch < args.epochs and not finished:
            train_loader.set_indices(shard_order(len(train_store), args.seed, epoch, rank, world_size), start=start_step)
            train_one_epoch(ddp_model, optimizer, train_loader, augment, device=device, epoch=epoch, seed=args.seed,
                            totals=totals, rank=rank, bf16=args.bf16, checkpoint_every=args.checkpoint_every,
                            save=lambda step: save(epoch, step), stop_requested=stop_requested,
                            log_every=args.log_every, monitor=monitor, show_progress=args.progress and main_process)
            val = evaluate_centre(model, val_loader, centre, device=device, bf16=args.bf16,
                                  show_progress=args.progress and main_process)
            loss_sum, errors, images = dist_utils.all_reduce_sum([totals.loss_sum, totals.errors, totals.images], device)
            lr = schedule.lr
            action = schedule.step(val["val_top1_error"], epoch + 1)
            for group in optimizer.param_groups:
                group["lr"] = schedule.lr
            epoch += 1
            finished = action == STOP
            record = dict(epoch=epoch, lr=lr, train_loss=loss_sum / images, train_top1_error=errors / images,
                          val_top1_error=val["val_top1_error"], val_top5_error=val["val_top5_error"],
                          val_loss=val["val_loss"], train_images=int(images), val_images=val["val_images"],
                          images_per_s=images / max(totals.seconds, 1e-9),
                          seconds=totals.seconds, lr_dropped=action == DROP, stopped=finished)
            if args.stall_steps and epoch * len(train_loader) >= args.stall_steps:
                monitor(record["train_loss"], epoch * len(train_loader))
            totals, start_step = EpochTotals(), 0
            if main_process:
                _append_log(log_path, record)
                tqdm.write(f"epoch {epoch}: lr {lr:g} train loss {record['train_loss']:.4f} top-1 "
                           f"{record['train_top1_error']:.3f} | val top-1 {record['val_top1_error']:.4f} top-5 "
                           f"{record['val_top5_error']:.4f} | {record['images_per_s']:.0f} img/s"
                           + (" | lr /10" if action == DROP else "") + (" | stop: 3 drops done" if finished else ""))
            save(epoch, 0, done=finished)
            if dist_utils.any_process(stop.signal is not None, device):
                raise Stopped(f"stopped after epoch {epoch}")
    except Stopped as e:
        if main_process:
            print(f"{e} ({stop.signal}); checkpoint {ckpt_path}; continue with the same command plus --resume")
        return record
    if main_process:
        print(f"{run}: done after {epoch} epochs" + (" (the schedule's 3 drops are spent)" if finished else ""))
    return record


def cli(argv=None):
    """Entry point: parse, train, and turn setup errors into one clear line and exit status 2."""
    try:
        args = parse_args(argv)
        main(args)
    except SetupError as e:
        print(f"paper_repro.train: error: {e}", file=sys.stderr)
        sys.exit(2)
    except FloatingPointError as e:
        print(f"paper_repro.train: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli()
