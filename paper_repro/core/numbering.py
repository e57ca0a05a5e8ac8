"""How every message and file counts a run's progress: epochs are named from 1, counts say what is done.

"epoch N" is the N-th pass over the training set (tqdm's "epoch 3/10", log.jsonl's "epoch": 3 is the
line written when epoch 3 ended). A position in a run is what is done: "epochs done" (complete
epochs) and "steps done" (training steps over all epochs); a checkpoint taken inside an epoch is
"after batch B of epoch N". The checkpoint file keeps its own keys ("epoch": epochs done, "step":
batches done in the next epoch, "steps_before": steps of the epochs done), which every message
translates through position(); evaluate's JSON records "epochs_done" and "steps_done".
"""


def position(epochs_done, batch=0):
    """Where a run stands in words: "after epoch 10", "after batch 4 of epoch 11", or "at the start"."""
    if batch:
        return f"after batch {batch} of epoch {epochs_done + 1}"
    return f"after epoch {epochs_done}" if epochs_done else "at the start"


def checkpoint_counts(ckpt):
    """{"epochs_done", "steps_done"} of a training checkpoint dict (None where it does not record them)."""
    epochs, batch, before = ckpt.get("epoch"), ckpt.get("step") or 0, ckpt.get("steps_before")
    return {"epochs_done": epochs if isinstance(epochs, int) else None,
            "steps_done": before + batch if isinstance(before, int) else None}
