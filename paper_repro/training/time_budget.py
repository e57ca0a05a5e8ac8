"""train --minutes: a run's length in epochs fitted to a wall-clock budget, foretold again after every epoch.

A fixed number of epochs cannot promise a wall time on a host whose speed moves (the 2-core VMs of
results/imagenet_subset.md ran the same epoch at 55 and at 111 images/s within one hour). With a
budget, the run plans as many epochs as the time left holds at the recent pace, and the released
schedule's changes are scaled to that length (ReleasedSchedule.replan): the schedule still runs to
its end, over fewer epochs on a slower host.
"""
import math

PACE_WINDOW = 3  # epochs whose slowest foretells the next: a host that slows down is believed at once
HALF = 0.5  # a resumed epoch that trained less than this share of its steps foretells nothing


def epochs_that_fit(budget_s, used_s, epochs_done, epoch_costs, max_epochs, test_s=0.0, tests=None):
    """The run's length: `epochs_done` plus the epochs the time left holds, at most `max_epochs`.

    budget_s: the budget; used_s: the run's wall time so far (every start's, to its last checkpoint);
    epoch_costs: recent whole epochs' wall times (training and validation), the last ones foretelling
    the next; test_s: one ten-view test's time and tests(n): how many tests a run of n epochs still
    runs from epoch `epochs_done` on (train --ten-view-every). The answer equals `epochs_done` when no
    further epoch fits: the run ends now. None when nothing is measured yet: keep the plan there is.
    """
    if not epoch_costs:
        return None
    pace = max(epoch_costs[-PACE_WINDOW:])
    left = budget_s - used_s
    fit = math.floor(left / max(pace, 1e-9))
    for n in range(min(max_epochs, epochs_done + max(fit, 0)), epochs_done, -1):
        if (n - epochs_done) * pace + (tests(n) * test_s if tests else 0.0) <= left:
            return n
    return epochs_done


def whole_epoch_seconds(train_s, val_s, steps_per_epoch, first_step):
    """An epoch's wall time had it trained every step, or None for a resumed epoch too short to tell.

    A resumed epoch began at `first_step` and trained fewer steps: its training time is scaled up, when it
    trained at least half of them (a fixed start-up cost scaled by 71 would foretell nothing real).
    """
    trained = steps_per_epoch - first_step
    if trained < HALF * steps_per_epoch:
        return None
    return train_s * steps_per_epoch / trained + val_s
