"""Everything a training run carries from one step to the next, saved and restored as one checkpoint.

The model, the optimizer's velocities, the schedule, where in which epoch the run stands, the
epoch's running totals, and every process's RNG states: on the CPU, a run killed at any moment and
resumed from its checkpoint with the same flags ends bit-identical to one never stopped (same seed,
thread count and processes). On a GPU, cuDNN's kernels are not deterministic: it continues correctly.
"""
import json
import os
import random

import numpy as np
import torch

from paper_repro.core.atomic import atomic_write
from paper_repro.training.engine import EpochTotals

FORMAT = 2  # 2: every process's totals, and the global step count


def seed_everything(seed):
    """Seed Python, NumPy and torch (the CPU and every CUDA device): the same init on every replica."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def seed_dropout(seed, rank, devices, cuda=torch.cuda):
    """Give each process, and each GPU of a process, its own dropout stream.

    torch.manual_seed puts the same seed on every CUDA device, so the two columns of one replica
    would draw the same dropout masks on two GPUs. The CPU generator draws both columns' masks in
    turn, so on the CPU one seed per process suffices. `cuda` is injectable for tests.
    """
    torch.manual_seed(seed + 7919 * (rank + 1))
    gpus = sorted({torch.device(d).index for d in devices if torch.device(d).type == "cuda"})
    for column, index in enumerate(gpus):
        with cuda.device(index):
            cuda.manual_seed(seed + 7919 * (rank + 1) + 104729 * (column + 1))


def rng_state(cuda=torch.cuda):
    """Every RNG's state in weights_only-safe types (tensors, ints, floats); `cuda` is injectable for tests."""
    _, key, pos, has_gauss, cached = np.random.get_state()
    version, mt, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda.get_rng_state_all() if cuda.is_available() else [],
        "numpy": {"key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
    }


def set_rng_state(state, cuda=torch.cuda):
    """Restore what rng_state() returned (CUDA states only for the devices this machine has)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and cuda.is_available():
        cuda.set_rng_state_all(state["cuda"][:cuda.device_count()])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"]), py["gauss"]))


ADAM_MOMENTS = ("exp_avg", "exp_avg_sq")


def _canonical(model, tensors):
    """Per-parameter `tensors` (model.parameters() order) as a canonical state_dict (layout-free: resume may
    change --gpus)."""
    # The model's state_dict hooks know the canonical layout: put the tensors in the parameters'
    # place for one state_dict() call, then put the weights back.
    params = list(model.parameters())
    weights = [p.data for p in params]
    try:
        for p, t in zip(params, tensors):
            p.data = t
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    finally:
        for p, w in zip(params, weights):
            p.data = w


def _per_parameter(model, canonical):
    """The inverse of _canonical: [tensor per parameter, in model.parameters() order]."""
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(canonical)
    out = [p.detach().clone() for p in model.parameters()]
    model.load_state_dict(weights)
    return out


def optimizer_state(model, optimizer):
    """The optimizer's per-parameter state as canonical state_dicts, plus the hyperparameters.

    PaperSGD: {"velocity"}; Adam: {"exp_avg", "exp_avg_sq", "step"} (one step count: every parameter
    steps together). A parameter without state yet has zeros (either optimiser's start).
    """
    params = list(model.parameters())
    hyper = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    if isinstance(optimizer, torch.optim.Adam):
        out = {key: _canonical(model, [optimizer.state[p].get(key, torch.zeros_like(p)) for p in params])
               for key in ADAM_MOMENTS}
        steps = {int(optimizer.state[p]["step"]) for p in params if "step" in optimizer.state[p]}
        if len(steps) > 1:
            raise ValueError(f"Adam's parameters stand at different step counts {sorted(steps)}: cannot save one")
        return {**out, "step": steps.pop() if steps else 0, "param_groups": hyper}
    velocity = _canonical(model, [optimizer.state[p].get("velocity", torch.zeros_like(p)) for p in params])
    return {"velocity": velocity, "param_groups": hyper}


def load_optimizer_state(model, optimizer, state):
    """Restore what optimizer_state() returned into `optimizer` over `model`."""
    adam = isinstance(optimizer, torch.optim.Adam)
    saved, wanted = "adam" if "exp_avg" in state else "paper-sgd", "adam" if adam else "paper-sgd"
    if saved != wanted:
        raise ValueError(f"the checkpoint holds {saved}'s state and this run's optimizer is {wanted}: "
                         f"resume it with --optimizer {saved}")
    params = list(model.parameters())
    if adam:
        moments = {key: _per_parameter(model, state[key]) for key in ADAM_MOMENTS}
        for i, p in enumerate(params):
            optimizer.state[p].update({key: moments[key][i] for key in ADAM_MOMENTS})
            optimizer.state[p]["step"] = torch.tensor(float(state["step"]))
    else:
        for p, v in zip(params, _per_parameter(model, state["velocity"])):
            optimizer.state[p]["velocity"] = v
    # A checkpoint from before the per-layer groups holds one group: its hyperparameters are the
    # run's settings, which the caller applies again (the learning rates come from the schedule).
    if len(state["param_groups"]) == len(optimizer.param_groups):
        for group, hyper in zip(optimizer.param_groups, state["param_groups"]):
            group.update(hyper)


class RunState:
    """Where a run stands: epoch, batch within it, finished or not, the epoch's totals, the schedule."""

    def __init__(self, schedule, world_size):
        self.schedule, self.world_size = schedule, world_size
        self.epoch, self.step, self.finished, self.totals = 0, 0, False, EpochTotals()
        self.steps_before = 0  # training steps of the epochs done: global step = steps_before + step
        self.planned_epochs = None  # train --minutes: the run's length that fits its budget (None: --epochs)
        self.seconds_used = 0.0  # train --minutes: the earlier starts' wall time, each to its last checkpoint
        self.epoch_costs = []  # train --minutes: the last whole epochs' wall times (training and validation)

    def checkpoint(self, model, optimizer, config, per_process):
        """The checkpoint dict (weights_only-safe) of `model` + `optimizer` at this state.

        per_process: every process's {"rng": rng_state(), "totals": its EpochTotals.state_dict()}, by rank.
        """
        return {"format": FORMAT, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "model_config": model.config(), "optimizer": optimizer_state(model, optimizer),
                "schedule": self.schedule.state_dict(), "epoch": self.epoch, "step": self.step,
                "finished": self.finished, "totals": [p["totals"] for p in per_process],
                "rng": [p["rng"] for p in per_process], "world_size": self.world_size,
                "steps_before": self.steps_before, "planned_epochs": self.planned_epochs,
                "seconds_used": self.seconds_used, "epoch_costs": list(self.epoch_costs), "config": config}

    def restore(self, ckpt, model, optimizer, rank):
        """Load `ckpt` into model, optimizer and this state; return a note if RNG streams cannot be replayed."""
        if ckpt.get("format") != FORMAT:
            raise ValueError(f"the checkpoint is in format {ckpt.get('format')}, this version reads format {FORMAT}; "
                             f"continue it with the version of paper_repro that wrote it")
        model.load_state_dict(ckpt["model"])
        load_optimizer_state(model, optimizer, ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        self.epoch, self.step, self.finished = ckpt["epoch"], ckpt["step"], ckpt["finished"]
        self.steps_before = ckpt["steps_before"]
        # (checkpoints from before --minutes lack these: a run of --epochs, its time not counted)
        self.planned_epochs, self.seconds_used = ckpt.get("planned_epochs"), ckpt.get("seconds_used", 0.0)
        self.epoch_costs = list(ckpt.get("epoch_costs", []))
        totals, rngs = ckpt["totals"], ckpt["rng"]
        same_world = len(rngs) == self.world_size
        # A changed number of processes resumes only at an epoch boundary (train refuses otherwise): totals 0.
        self.totals = EpochTotals(**totals[rank]) if same_world else EpochTotals()
        if same_world:
            set_rng_state(rngs[rank])
            return None
        return (f"the checkpoint has {len(rngs)} processes' RNG states, this run {self.world_size}; "
                f"dropout masks will differ from an uninterrupted run")

    @property
    def global_step(self):
        """Training steps done so far, over all epochs."""
        return self.steps_before + self.step

    def epochs_wanted(self, max_epochs):
        """The run's length: --epochs, or the shorter length its --minutes budget planned."""
        return max_epochs if self.planned_epochs is None else min(max_epochs, self.planned_epochs)

    def next_epoch(self, steps_in_epoch):
        """Start the next epoch from its first batch with fresh totals."""
        self.steps_before += steps_in_epoch
        self.epoch, self.step, self.totals = self.epoch + 1, 0, EpochTotals()


def truncate_log(path, epochs_done, key="epoch"):
    """Keep the log lines up to where the checkpoint stands (a kill may leave more): `key` <= epochs_done."""
    if not os.path.isfile(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.endswith("\n") and json.loads(line)[key] <= epochs_done]
    atomic_write(path, lambda f: f.writelines(lines), mode="w")


def append_log(path, record):
    """Add one epoch's record to log.jsonl, on disk before returning."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
