"""train --minutes: a run's length in epochs fitted to a wall-clock budget, foretold again after every epoch.

A fixed number of epochs cannot promise a wall time on a host whose speed moves (the 2-core VMs of
results/imagenet_subset.md ran the same epoch at 55 and at 111 images/s within one hour). With a
budget, the run plans as many epochs as the time left holds at the recent pace, and the released
schedule's changes are scaled to that length (ReleasedSchedule.replan): the schedule still runs to
its end, over fewer epochs on a slower host.
"""
import math

PACE_WINDOW = 3  # epochs whose slowest foretells the next: a host that slows down is believed at once


def epochs_that_fit(budget_s, used_s, epochs_done, epoch_costs, max_epochs, end_cost_s=0.0):
    """The run's length: `epochs_done` plus the epochs the time left holds, at most `max_epochs`.

    budget_s: the budget; used_s: the run's wall time so far (every start's, to its last checkpoint);
    epoch_costs: the wall time of each epoch of this start (training and validation), the last ones
    foretelling the next; end_cost_s: what runs once after the last epoch (a ten-view test).
    The answer equals `epochs_done` when no further epoch fits: the run ends now.
    """
    if not epoch_costs:
        return max_epochs  # nothing measured yet: the first epoch runs at any budget
    pace = max(epoch_costs[-PACE_WINDOW:])
    fit = math.floor((budget_s - used_s - end_cost_s) / max(pace, 1e-9))
    return max(epochs_done, min(max_epochs, epochs_done + max(fit, 0)))


def whole_epoch_seconds(train_s, val_s, steps_per_epoch, first_step):
    """An epoch's wall time had it trained every step: a resumed epoch that began at `first_step` trained fewer."""
    return train_s * steps_per_epoch / max(1, steps_per_epoch - first_step) + val_s
