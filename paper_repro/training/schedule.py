"""Learning-rate schedules: the released run's hand-written one, the paper's divide-by-10-on-plateau, fixed steps.

Every schedule answers the same calls: step(val_error, epoch) after each epoch, lr (the weights'
rate), layer_lr(layer) (a layer's own rate: the released schedule treats conv1 apart) and
colour_noise (whether the augmentation still adds colour noise).
"""
DROP, STOP = "drop", "stop"


class _Uniform:
    """Every layer at self.lr, colour noise on throughout: the plateau and step schedules."""

    colour_noise = True

    def layer_lr(self, layer):
        """The rate of `layer`: the same for every layer."""
        return self.lr


class PlateauSchedule(_Uniform):
    """Divide the lr by `factor` when the val error has not improved for `patience` epochs.

    An epoch improves when its error is below the best so far minus `threshold` (absolute,
    error as a fraction). After `max_drops` drops the next plateau ends training: the paper
    "reduced [the learning rate] three times prior to termination".
    """

    def __init__(self, lr, factor=0.1, patience=3, threshold=0.001, max_drops=3):
        if not 0 < factor < 1 or patience < 1 or threshold < 0 or max_drops < 0:
            raise ValueError(f"PlateauSchedule: need 0<factor<1, patience>=1, threshold>=0, max_drops>=0 "
                             f"(got {factor}, {patience}, {threshold}, {max_drops})")
        self.lr, self.factor, self.patience = lr, factor, patience
        self.threshold, self.max_drops = threshold, max_drops
        self.best = float("inf")
        self.bad_epochs = 0
        self.drops = 0

    def step(self, val_error, epoch=None):
        """Record one epoch's val error; return "drop" (lr divided), "stop" (training over) or None.

        `epoch` is not needed by a plateau: it is there so that train calls both schedules alike.
        """
        if val_error < self.best - self.threshold:
            self.best, self.bad_epochs = val_error, 0
            return None
        self.bad_epochs += 1
        if self.bad_epochs < self.patience:
            return None
        self.bad_epochs = 0
        if self.drops >= self.max_drops:
            return STOP
        self.drops += 1
        self.lr *= self.factor
        return DROP

    def state_dict(self):
        """Everything needed to continue the schedule (JSON-able, weights_only-safe)."""
        return dict(kind="plateau", lr=self.lr, factor=self.factor, patience=self.patience,
                    threshold=self.threshold, max_drops=self.max_drops, best=self.best,
                    bad_epochs=self.bad_epochs, drops=self.drops)

    def load_state_dict(self, state):
        """Restore what state_dict() returned."""
        _check_kind(state, "plateau")
        for k in ("lr", "factor", "patience", "threshold", "max_drops", "best", "bad_epochs", "drops"):
            setattr(self, k, state[k])


class StepSchedule(_Uniform):
    """Divide the lr by `factor` after each epoch listed in `drop_epochs` (1-based epochs done)."""

    def __init__(self, lr, drop_epochs=(30, 60, 80), factor=0.1):
        if not 0 < factor < 1 or any(e < 1 for e in drop_epochs):
            raise ValueError(f"StepSchedule: need 0<factor<1 and drop epochs >= 1 (got {factor}, {list(drop_epochs)})")
        self.lr, self.factor = lr, factor
        self.drop_epochs = sorted(int(e) for e in drop_epochs)
        self.drops = 0

    def step(self, val_error, epoch):
        """After 1-based epoch `epoch`: return "drop" if the lr drops now, else None (--epochs ends it)."""
        if epoch in self.drop_epochs:
            self.drops += 1
            self.lr *= self.factor
            return DROP
        return None

    def state_dict(self):
        """Everything needed to continue the schedule."""
        return dict(kind="step", lr=self.lr, factor=self.factor, drop_epochs=list(self.drop_epochs), drops=self.drops)

    def load_state_dict(self, state):
        """Restore what state_dict() returned."""
        _check_kind(state, "step")
        self.lr, self.factor, self.drops = state["lr"], state["factor"], state["drops"]
        self.drop_epochs = list(state["drop_epochs"])


# The released runs' hand-written changes (layer-params-145.cfg, -145-2010.cfg), each after the epoch it
# names: (epoch, layers, what). "all": every layer's rate /10; "conv1"/"others": that part /10;
# "freeze-conv1": conv1's rate 0; "noise-off": no more colour noise. The run was killed at the last epoch.
RELEASED = {
    "2012": {"events": ((25, "all", "/10"), (51, "all", "/10"), (67, "conv1", "/10"), (67, "all", "noise-off"),
                        (72, "conv1", "freeze"), (79, "others", "/10")), "epochs": 91},
    "2010": {"events": ((23, "all", "/10"), (51, "all", "/10"), (68, "conv1", "/10"), (68, "all", "noise-off"),
                        (72, "conv1", "freeze"), (78, "others", "/10")), "epochs": 93},
}


def released_events(table, epochs):
    """The released run's changes with their epochs scaled from its length to `epochs` (unchanged at its own)."""
    spec = RELEASED[table]
    scale = epochs / spec["epochs"]
    # Scaled epochs keep their order; an event never lands before epoch 1 nor after the last.
    return [(min(epochs, max(1, round(e * scale))), part, what) for e, part, what in spec["events"]]


class ReleasedSchedule:
    """The authors' hand-written 2012 schedule, by epoch, with conv1's separate fate and colour noise's end.

    At its own length (91 epochs for 2012) the changes fall on the epochs the file names; with
    another --epochs every change's epoch is scaled by epochs / 91 (a short run keeps the shape).
    replan(n) rescales the changes not yet made to a new length (train --minutes: the epochs that fit).
    """

    def __init__(self, lr, epochs, table="2012"):
        if table not in RELEASED:
            raise ValueError(f"ReleasedSchedule: table must be one of {sorted(RELEASED)}; got {table!r}")
        self.initial, self.epochs, self.table = lr, epochs, table
        self.lr, self.conv1_lr, self.colour_noise = lr, lr, True
        self.events = released_events(table, epochs)
        self.done = 0  # epochs whose changes are applied
        self.applied = 0  # changes made, in the table's order

    def layer_lr(self, layer):
        """conv1's own rate for conv1, the others' for every other layer."""
        return self.conv1_lr if layer == "conv1" else self.lr

    def replan(self, epochs):
        """Scale the changes to a run of `epochs` epochs; those made stay made, and the rest keep their order."""
        self.epochs = epochs
        self.events = released_events(self.table, epochs)

    def step(self, val_error, epoch):
        """After 1-based epoch `epoch`: make the changes due by then; "drop" if a rate changed, else None.

        At a fixed length each change is due at exactly its epoch; after replan() to a shorter run a change
        whose new epoch has passed is made at this epoch's end, so that none is skipped.
        """
        changed = False
        while self.applied < len(self.events) and self.events[self.applied][0] <= epoch:
            _, part, what = self.events[self.applied]
            self.applied += 1
            if what == "noise-off":
                self.colour_noise = False
                continue
            changed = True
            if what == "freeze":
                self.conv1_lr = 0.0
                continue
            if part in ("all", "others"):
                self.lr *= 0.1
            if part in ("all", "conv1"):
                self.conv1_lr *= 0.1
        self.done = epoch
        return DROP if changed else None

    def state_dict(self):
        """Everything needed to continue the schedule."""
        return dict(kind="released", lr=self.lr, conv1_lr=self.conv1_lr, colour_noise=self.colour_noise,
                    initial=self.initial, epochs=self.epochs, table=self.table, done=self.done,
                    applied=self.applied)

    def load_state_dict(self, state):
        """Restore what state_dict() returned."""
        _check_kind(state, "released")
        self.__init__(state["initial"], state["epochs"], state["table"])
        self.lr, self.conv1_lr = state["lr"], state["conv1_lr"]
        self.colour_noise, self.done = state["colour_noise"], state["done"]
        # A checkpoint from before replan() existed: its length never changed, so the changes made are those due.
        self.applied = state.get("applied", sum(when <= self.done for when, _, _ in self.events))


def _check_kind(state, kind):
    if state.get("kind") != kind:
        raise ValueError(f"schedule state is for a {state.get('kind')!r} schedule, not {kind!r}: "
                         f"resume with the --lr-schedule the run started with")
