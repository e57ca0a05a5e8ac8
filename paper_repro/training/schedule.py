"""Learning-rate schedules: the paper's divide-by-10-on-plateau, and fixed steps for exact reruns."""
DROP, STOP = "drop", "stop"


class PlateauSchedule:
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


class StepSchedule:
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


def _check_kind(state, kind):
    if state.get("kind") != kind:
        raise ValueError(f"schedule state is for a {state.get('kind')!r} schedule, not {kind!r}: "
                         f"resume with the --lr-schedule the run started with")
