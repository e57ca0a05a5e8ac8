"""python -m paper_repro.train: the paper's training on two GPUs, one GPU, the CPU, or a torchrun cluster."""
import os
import shlex
import signal
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from paper_repro.core import cli
from paper_repro.core.atomic import atomic_write_json
from paper_repro.core.cli import checked
from paper_repro.core.devices import choose_devices, set_precision_policy
from paper_repro.core.metrics import topk_errors, topk_predictions
from paper_repro.core.numbering import position
from paper_repro.core.recipe import RECIPE_VALUES, deviations
from paper_repro.data.loader import BatchLoader, default_workers, shard_order, split_order
from paper_repro.data.store import ImageNetStore, check_trainable, load_stats
from paper_repro.evaluation.scoring import evaluate, views_of
from paper_repro.nets.checkpoint import (CHECKPOINT, CheckpointError, load_checkpoint, load_run_checkpoint,
                                         remove_stale_temps, save_checkpoint)
from paper_repro.training import distributed as dist_utils
from paper_repro.training.build import build_model, make_optimizer, make_schedule, make_transforms
from paper_repro.training.engine import StallCheck, Stopped, evaluate_centre, format_duration, train_one_epoch
from paper_repro.training.host_memory import keep_freed_memory
from paper_repro.training.param_groups import apply_learning_rates
from paper_repro.training.run_state import RunState, append_log, rng_state, seed_dropout, seed_everything, truncate_log
from paper_repro.training.schedule import DROP, STOP
from paper_repro.training.settings import check_world, get_args_parser, parse_args, resolve_run
from paper_repro.training.time_budget import PACE_WINDOW, epochs_that_fit, whole_epoch_seconds

PROG = "paper_repro.train"

__all__ = ["get_args_parser", "parse_args", "main"]


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


def main(args):
    """Train as `args` (from parse_args) says; return the last epoch's log record (None if nothing ran)."""
    started = time.perf_counter()
    stores = _open_store(args)  # the data before the devices: a missing store is the first thing to fix
    devices, chosen = checked(choose_devices, args.gpus, "cpu,cpu")
    if args.gpus is not None and "gpus" not in args.explicit:
        chosen += f", from --config {args.config}"  # a config's spec counts as given
    rank, world_size = dist_utils.init_from_env(devices)
    clean = False
    try:
        with StopFlag() as stop:
            record = train(args, devices, rank, world_size, stop, stores=stores, chosen=chosen, started=started)
        clean = True
        return record
    except Stopped as e:
        clean = True  # every process stopped at the same step, after the same checkpoint
        raise cli.Interrupted(f"{e}; checkpoint {os.path.join(args.out, CHECKPOINT)}; continue with the same "
                              f"command plus --resume") from None
    finally:
        dist_utils.cleanup(synchronize=clean)


def _decided_by_rank0(rank, decide, where):
    """decide() run on rank 0 alone; its answer on every process, or its error as one UsageError on every process.

    The others wait for rank 0 in the broadcast: an error that stayed on rank 0 would leave them waiting.
    """
    answer = None
    if rank == 0:
        try:
            answer = {"value": decide()}
        except (cli.UsageError, CheckpointError) as e:  # already worded for the user
            answer = {"error": str(e)}
        except Exception as e:
            answer = {"error": f"{where}: {type(e).__name__}: {e}"}
    answer = dist_utils.broadcast_object(answer)
    if "error" in answer:
        raise cli.UsageError(answer["error"])
    return answer["value"]


def _agree_on_run(args, rank):
    """Rank 0 reads the run folder and decides (new run or resume, from which file); the others follow."""
    def decide():
        resolved, resume = resolve_run(args)
        return vars(resolved), resume

    values, resume = _decided_by_rank0(rank, decide, args.out)
    dist_utils.check_shared_folder(args.out)
    return type(args)(**values), resume


def _open_store(args):
    try:
        return (ImageNetStore(args.data, "train"), ImageNetStore(args.data, getattr(args, "val_split", "val")),
                load_stats(args.data))
    except (ValueError, OSError) as e:
        raise cli.UsageError(str(e)) from None


def _restore(state, model, optimizer, args, rank, num_classes, train_images):
    """Load the newest loadable checkpoint of the run (rank 0 picks the file) into model, optimizer, state."""
    loaded = {}

    def decide():
        loaded["ckpt"], path = load_run_checkpoint(args.out, warn=lambda text: tqdm.write(text, file=sys.stderr))
        return path

    path = _decided_by_rank0(rank, decide, args.out)
    # The others load the file rank 0 chose, even if a newer one appears meanwhile.
    ckpt = loaded["ckpt"] if rank == 0 else load_checkpoint(path)
    for key, have in (("num_classes", num_classes), ("train_images", train_images)):
        if ckpt["config"].get(key) != have:
            raise cli.UsageError(f"--data {args.data} has {key} {have}, the run was trained with "
                                 f"{ckpt['config'].get(key)}: resume on the store the run started with")
    saved_world = len(ckpt["rng"])
    if ckpt["step"] and saved_world != state.world_size:
        raise cli.UsageError(
            f"the checkpoint {path} stopped {position(ckpt['epoch'], ckpt['step'])} "
            f"with {saved_world} processes; this run has {state.world_size}. Finish that epoch with "
            f"{saved_world} processes (the number of processes may change at any epoch boundary: every epoch "
            f"ends with a checkpoint), so that no image is seen twice or skipped")
    note = checked(state.restore, ckpt, model, optimizer, rank)
    if rank == 0:
        if note:
            tqdm.write("note: " + note, file=sys.stderr)
        truncate_log(os.path.join(args.out, "log.jsonl"), state.epoch)
        truncate_log(os.path.join(args.out, "steps.jsonl"), state.global_step, key="step")
        print(f"resuming {args.out} {position(state.epoch, state.step)} (epochs done: {state.epoch}, steps done: "
              f"{state.global_step}; from {path})", flush=True)


def start_line(args, train_images, val_images, num_classes, steps_per_epoch, devices, chosen, world_size):
    """The run's first line: its data, its steps, its devices (and why those), its recipe, its folder."""
    # A run from before the released recipe (recipe.LEGACY_RECIPE) is told against the paper's text it followed.
    against = args.recipe if args.recipe in RECIPE_VALUES else "paper-text"
    changed = ", ".join(_as_flag(key, value) for key, _, value in deviations(vars(args), against))
    recipe = (args.recipe + (f" (compared with {against})" if against != args.recipe else "")
              + (f" except {changed}" if changed else "") + (f" (--config {args.config})" if args.config else ""))
    processes = f" per process, {world_size} processes" if world_size > 1 else ""
    return (f"train {args.out}: {train_images} training images of {num_classes} classes (val: {val_images}) from "
            f"{args.data} | {steps_per_epoch} steps of {args.batch_size // world_size} images per epoch"
            f"{processes}, {args.epochs} epoch{'s' if args.epochs != 1 else ''} at most"
            + (f", as many as fit in {args.minutes:g} min (--minutes)" if args.minutes else "") + " | devices "
            f"{', '.join(devices)} ({chosen}) | recipe: {recipe}"
            + (f" | stall check at step {args.stall_steps}" if 0 < args.stall_steps <= args.epochs * steps_per_epoch
               else ""))


def _as_flag(key, value):
    flag = "--" + key.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else "--no-" + flag[2:]
    return f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}"


def end_line(args, state, record, seconds, resumed=False):
    """The run's last line: where it stands, its final errors, its wall time, the commands that come next."""
    out, data = shlex.quote(args.out), shlex.quote(args.data)
    eval_json = shlex.quote(os.path.join(args.out, "eval.json"))
    why = ""
    if state.finished:
        why = (f" (training error at most {args.stop_at_train_error:g})" if record and record.get("reached_target")
               else f" (the schedule's {args.lr_max_drops} drops are spent)")
    elif state.planned_epochs is not None and state.epoch >= state.planned_epochs:
        n = state.epoch
        why = (f" (the {n} epoch{'s' if n != 1 else ''} that fit{'s' if n == 1 else ''} in --minutes {args.minutes:g}"
               + (f", the schedule scaled to {'them' if n != 1 else 'it'})" if hasattr(state.schedule, "replan")
                  else ")"))
    split = "" if getattr(args, "val_split", "val") == "val" else f" --split {args.val_split}"  # CIFAR-10: test
    errors = ""
    if record:
        errors = (f"; val top-1 error {record['val_top1_error']:.4f}, top-5 {record['val_top5_error']:.4f} "
                  f"(centre patch, epoch {record['epoch']})")
    return (f"train {args.out}: done {position(state.epoch)}{why} (epochs done: {state.epoch}, steps done: "
            f"{state.global_step}) in {format_duration(seconds)}{' (this start)' if resumed else ''}{errors}. Next, "
            f"the paper's ten-view test and the "
            f"report: python -m paper_repro.evaluate --data {data}{split} --checkpoint "
            f"{shlex.quote(os.path.join(args.out, CHECKPOINT))} --json {eval_json} && python -m paper_repro.report "
            f"--run {out} --eval {eval_json} --out {shlex.quote(os.path.join(args.out, 'report'))}")


def train(args, devices, rank, world_size, stop, stores=None, chosen="", started=None):
    """Section 5 of the paper: SGD on the augmented training set, validation after every epoch, lr /10 on plateaus."""
    started = time.perf_counter() if started is None else started
    args, resume = _agree_on_run(args, rank)
    check_world(args, world_size)  # on the run's own batch size, saved settings merged
    main_process, device = rank == 0, devices[0]
    train_store, val_store, stats = stores or _open_store(args)
    checked(check_trainable, train_store, args.batch_size)  # on the run's own batch size, saved settings merged
    num_classes = len(train_store.classes)
    batch = args.batch_size // world_size
    steps_per_epoch = -(-(-(-len(train_store) // world_size)) // batch)  # DistributedSampler pads every share
    val_steps = -(-(-(-len(val_store) // world_size)) // batch)
    if main_process:
        print(start_line(args, len(train_store), len(val_store), num_classes, steps_per_epoch, devices, chosen,
                         world_size), flush=True)
    precision = set_precision_policy(devices, tf32=args.tf32)
    host_memory = keep_freed_memory(devices, args.keep_freed_memory)

    seed_everything(args.seed)  # the same init on every replica
    model, stds = build_model(args, num_classes, devices)
    seed_dropout(args.seed, rank, devices)  # each replica, and each GPU, its own dropout masks
    optimizer = make_optimizer(model, args)
    state = RunState(make_schedule(args), world_size)
    if resume:
        _restore(state, model, optimizer, args, rank, num_classes, len(train_store))
        if not args.minutes:
            state.planned_epochs = None  # --minutes 0 on resume: no budget, --epochs epochs
    apply_learning_rates(optimizer, state.schedule, args.lr, args.bias_lr_fixed)

    workers = default_workers() if args.workers is None else args.workers
    config = {k: v for k, v in vars(args).items() if k != "explicit"}
    config.update(model_config=model.config(), world_size=world_size, devices=list(devices), workers_used=workers,
                  num_classes=num_classes, train_images=len(train_store), val_images=len(val_store),
                  init_std_per_layer=stds, precision=precision, host_memory=host_memory,
                  torch_version=str(torch.__version__),
                  param_groups=[{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups])
    log_path, ckpt_path = os.path.join(args.out, "log.jsonl"), os.path.join(args.out, CHECKPOINT)
    steps_path = os.path.join(args.out, "steps.jsonl")
    if main_process:
        remove_stale_temps(args.out)
        if not resume and os.path.exists(steps_path):
            os.unlink(steps_path)  # a start that died before its first checkpoint: nothing of it is kept
        atomic_write_json(os.path.join(args.out, "config.json"), config)
    if state.finished or state.epoch >= state.epochs_wanted(args.epochs):
        if main_process:
            n = state.epoch
            why = ("the schedule's last plateau ended it" if state.finished else "raise --epochs to go on"
                   if n >= args.epochs else f"its --minutes budget held {n} epoch{'s' if n != 1 else ''}"
                   + (", and its schedule ended there" if hasattr(state.schedule, "replan") else "")
                   + "; --minutes 0 lifts the budget")
            print(f"train {args.out}: finished {position(state.epoch)} (epochs done: {state.epoch}); nothing to do "
                  f"({why})")
        return None

    ddp_model = dist_utils.wrap(model)
    on_gpu = device.startswith("cuda")
    train_loader = BatchLoader(train_store, [], batch, workers=workers, pin_memory=on_gpu, decode=args.decode,
                               device=device)
    val_loader = BatchLoader(val_store, split_order(len(val_store), rank, world_size), batch, workers=workers,
                             pin_memory=on_gpu, decode=args.decode, device=device)
    # TrainPatch, CentrePatch (or a CIFAR net's own data path); without loader workers the patches take every thread
    augment, centre = make_transforms(args, stats, model, train_loader.workers)
    augment.noise_on = state.schedule.colour_noise  # the released schedule switches it off near the end
    stall = StallCheck(num_classes, args.stall_steps)

    used_before = state.seconds_used  # the earlier starts' wall time (--minutes counts every start)

    def used():
        return used_before + time.perf_counter() - started

    def save():
        state.seconds_used = used()
        # Every process's RNGs and running totals: a resumed epoch logs the same numbers as one never stopped.
        per_process = dist_utils.all_gather_objects({"rng": rng_state(), "totals": state.totals.state_dict()})
        failure = None
        if main_process:
            try:
                save_checkpoint(ckpt_path, state.checkpoint(model, optimizer, config, per_process))
            except (OSError, CheckpointError) as e:
                failure = (f"could not write the checkpoint {ckpt_path} ({getattr(e, 'strerror', None) or e}); the "
                           f"previous checkpoint is intact. Free some space and continue with the same command plus "
                           f"--resume")
        failure = dist_utils.first_error(failure, device)  # every process stops, none waits for rank 0
        if failure:
            raise cli.RunFailed(failure)

    def save_at(step):
        state.step = step
        save()

    def monitor(loss, global_step):
        if main_process:  # this process's window: the loss curve step by step, also before the first epoch ends
            append_log(steps_path, {"step": global_step, "epoch": state.epoch + 1, "loss": loss})
        message = stall(loss, global_step)
        if message and main_process:
            tqdm.write("WARNING: " + message, file=sys.stderr)

    def stop_requested(step):
        if not dist_utils.is_distributed():
            return stop.signal is not None
        return step % args.log_every == 0 and dist_utils.any_process(stop.signal is not None, device)

    val_seconds, test_seconds = [], []  # each validation's and ten-view test's wall time: the time left counts them

    def test_estimate(val):
        # ten views: ten validations' forward passes, until one test is timed
        return test_seconds[-1] if test_seconds else 10 * val

    def run_left(per_step, steps_left):
        epochs = state.epochs_wanted(args.epochs)
        epochs_after = epochs - state.epoch - 1
        # Before the first validation is timed: a forward pass only, about a third of a training step.
        val = val_seconds[-1] if val_seconds else per_step * val_steps / 3
        tests = ten_views_due(args.ten_view_every, state.epoch + 1, epochs)
        left = (per_step * (steps_left + epochs_after * steps_per_epoch) + val * (epochs_after + 1)
                + test_estimate(val) * tests)
        if args.minutes:  # the budget ends the run sooner if this pace does not hold its epochs
            left = min(left, max(0.0, 60 * args.minutes - used()))
        return left

    def plan(epoch_cost):
        # --minutes: the run's length from the time left, before the schedule steps, so that this epoch's
        # changes are those of the new length. The ten-view tests still due are counted apart from the epochs.
        if epoch_cost is not None:
            state.epoch_costs = (state.epoch_costs + [epoch_cost])[-PACE_WINDOW:]
        done = state.epoch + 1
        planned = epochs_that_fit(60 * args.minutes, used(), done, state.epoch_costs, args.epochs,
                                  test_s=test_estimate(val_seconds[-1]),
                                  tests=lambda n: ten_views_due(args.ten_view_every, done, n))
        planned = dist_utils.broadcast_object(planned)  # every process stops after the same epoch
        if planned is None:
            return  # a resumed epoch too short to foretell one: the plan stays
        # only a budget that cut the run binds it: one that held every epoch leaves --epochs free to rise on resume
        state.planned_epochs = planned if planned < args.epochs else None
        if hasattr(state.schedule, "replan"):
            state.schedule.replan(planned)

    record, epoch_seconds = None, []
    while state.epoch < state.epochs_wanted(args.epochs) and not state.finished:
        epoch_started, first_step = time.perf_counter(), state.step
        train_loader.set_indices(shard_order(len(train_store), args.seed, state.epoch, rank, world_size),
                                 start=state.step)
        train_one_epoch(ddp_model, optimizer, train_loader, augment, device=device, epoch=state.epoch,
                        seed=args.seed, totals=state.totals, rank=rank, bf16=args.bf16,
                        checkpoint_every=args.checkpoint_every, save=save_at,
                        stop_requested=stop_requested, log_every=args.log_every, monitor=monitor,
                        show_progress=args.progress and main_process, steps_before=state.steps_before,
                        epochs=state.epochs_wanted(args.epochs), run_left=run_left)
        val_started = time.perf_counter()
        val = evaluate_centre(model, val_loader, centre, device=device, bf16=args.bf16,
                              show_progress=args.progress and main_process)
        val_seconds.append(time.perf_counter() - val_started)
        if args.minutes:
            plan(whole_epoch_seconds(val_started - epoch_started, val_seconds[-1], steps_per_epoch, first_step))
        record = _epoch_record(state, val, device, steps=len(train_loader))
        if args.minutes:
            record["planned_epochs"] = state.epochs_wanted(args.epochs)
        target = getattr(args, "stop_at_train_error", None)
        record["reached_target"] = target is not None and record["train_top1_error"] <= target
        record["stopped"] = record["stopped"] or record["reached_target"]
        # a stop request skips it: a test takes minutes, a scheduler's grace period may not
        if (ten_view_due(args.ten_view_every, record["epoch"], state.epochs_wanted(args.epochs), record["stopped"])
                and not dist_utils.any_process(stop.signal is not None, device)):
            record.update(ten_view_test(model, val_store, stats["mean_image"], args, device, rank, world_size,
                                        workers, show_progress=args.progress and main_process))
            test_seconds.append(record["ten_view_seconds"])
        state.next_epoch(len(train_loader))
        state.finished = record["stopped"]
        apply_learning_rates(optimizer, state.schedule, args.lr, args.bias_lr_fixed)
        augment.noise_on = state.schedule.colour_noise
        epoch_seconds.append(time.perf_counter() - epoch_started)
        if main_process:
            append_log(log_path, record)
            tqdm.write(_epoch_line(record, args, epoch_seconds, state.epochs_wanted(args.epochs)))
        save()
        if dist_utils.any_process(stop.signal is not None, device):
            raise Stopped(f"{stop.signal or 'a stop request'}: stopped after epoch {state.epoch}")
    if main_process:
        print(end_line(args, state, record, time.perf_counter() - started, resume), flush=True)
    return record


def _epoch_record(state, val, device, steps):
    """One log.jsonl line: the epoch's training totals over all processes, its validation, the schedule's move."""
    totals = state.totals
    loss_sum, errors, images = dist_utils.all_reduce_sum([totals.loss_sum, totals.errors, totals.images], device)
    lr = state.schedule.lr
    action = state.schedule.step(val["val_top1_error"], state.epoch + 1)
    return dict(epoch=state.epoch + 1, lr=lr, train_loss=loss_sum / images, train_top1_error=errors / images,
                val_top1_error=val["val_top1_error"], val_top5_error=val["val_top5_error"],
                val_loss=val["val_loss"], train_images=int(images), val_images=val["val_images"],
                images_per_s=images / max(totals.seconds, 1e-9), seconds=totals.seconds,
                lr_dropped=action == DROP, stopped=action == STOP, steps=state.steps_before + steps)


def ten_view_due(every, epoch, epochs, stopped=False):
    """Whether --ten-view-every `every` tests after `epoch`: every N-th epoch, and the run's last (of `epochs`)."""
    return bool(every) and (epoch % every == 0 or stopped or epoch >= epochs)


def ten_views_due(every, first, epochs):
    """How many ten-view tests a run of `epochs` runs from epoch `first` on (ten_view_due's epochs)."""
    return sum(ten_view_due(every, e, epochs) for e in range(first, epochs + 1))


def ten_view_test(model, store, mean_image, args, device, rank, world_size, workers, show_progress=False):
    """The paper's test (evaluate's: ten views, or a CIFAR net's own) of `store`, as log.jsonl keys.

    Each process scores its own contiguous share of the images and the error counts are summed: no image
    twice, none left out, whatever the number of processes.
    """
    started = time.perf_counter()
    share = np.array_split(np.arange(len(store)), world_size)[rank]
    model.eval()
    probs = evaluate([model], store, mean_image, views=None, batch_size=args.batch_size // world_size,
                     workers=workers, bf16=args.bf16, progress=show_progress, decode=args.decode, indices=share,
                     mean_crop=args.mean_crop)  # the mean subtracted as in training, as evaluate reads it from the run
    labels = torch.as_tensor(np.asarray(store.labels)[share], dtype=torch.int64)
    wrong = topk_errors(topk_predictions(probs, k=5), labels, ks=(1, 5))
    n, top1, top5 = dist_utils.all_reduce_sum([len(share), wrong[1], wrong[5]], device)
    return dict(val_ten_view_top1_error=top1 / n, val_ten_view_top5_error=top5 / n,
                ten_view_views=views_of(model.config()), ten_view_seconds=time.perf_counter() - started)


def _epoch_line(record, args, epoch_seconds, epochs):
    """One line per epoch of a run of `epochs`: its numbers, its wall time, and the run's time left at this pace
    (at most: a plateau schedule may stop it sooner)."""
    left = epochs - record["epoch"]
    pace = sum(epoch_seconds) / len(epoch_seconds)
    if record["stopped"] or not left:
        remaining = ""
    else:
        remaining = (f", {'up to ' if args.lr_schedule == 'plateau' else ''}{left} epoch{'s' if left != 1 else ''} "
                     f"left: about {format_duration(left * pace)}")
    return (f"epoch {record['epoch']}/{epochs}: lr {record['lr']:g} train loss {record['train_loss']:.4f} "
            f"top-1 {record['train_top1_error']:.3f} | val top-1 {record['val_top1_error']:.4f} top-5 "
            f"{record['val_top5_error']:.4f}"
            + (f" | {record['ten_view_views']} view{'s' if record['ten_view_views'] != 1 else ''} top-1 "
               f"{record['val_ten_view_top1_error']:.4f} top-5 "
               f"{record['val_ten_view_top5_error']:.4f}" if "val_ten_view_top1_error" in record else "")
            + f" | {record['images_per_s']:.0f} img/s | "
            f"{format_duration(epoch_seconds[-1])}"
            + remaining
            + (" | lr /10" if record["lr_dropped"] else "")
            + (f" | stop: training error at most {args.stop_at_train_error:g}" if record.get("reached_target")
               else f" | stop: {args.lr_max_drops} drops done" if record["stopped"] else ""))


def run_cli(argv=None):
    """Entry point: parse, train; failures become one line and exit status 2 (usage), 1 (failed) or 130."""
    return cli.run(PROG, lambda: main(parse_args(argv)))


if __name__ == "__main__":
    run_cli()
    cli.leave()
