"""Injected faults for the restart tests: PAPER_REPRO_FAULT=kill:rank1:step:5 SIGKILLs rank 1 at its 5th training step.

The training code marks its points with point("step"), point("val"), point("checkpoint"). A fault
fires once, in the group's first start (TORCHELASTIC_RESTART_COUNT 0 or unset): the restarted group
runs through the same point and goes on. Unset (every real run), point() is one dictionary look-up.
"""
import os
import signal

ENV = "PAPER_REPRO_FAULT"
POINTS = ("step", "val", "checkpoint")

_counts = {}


def parse(spec):
    """(rank, point, n) of a PAPER_REPRO_FAULT value such as 'kill:rank1:step:5'; ValueError if malformed."""
    parts = spec.split(":")
    if len(parts) != 4 or parts[0] != "kill" or not parts[1].startswith("rank") or parts[2] not in POINTS:
        raise ValueError(f"{ENV}={spec!r}: expected kill:rankR:POINT:N with POINT one of {', '.join(POINTS)} "
                         f"(e.g. kill:rank1:step:5)")
    try:
        rank, n = int(parts[1][4:]), int(parts[3])
    except ValueError:
        raise ValueError(f"{ENV}={spec!r}: R and N must be integers (e.g. kill:rank1:step:5)") from None
    return rank, parts[2], n


def point(name):
    """Count one pass through `name`; SIGKILL this process if PAPER_REPRO_FAULT names this rank, point and count."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    rank, where, n = parse(spec)
    _counts[name] = _counts.get(name, 0) + 1
    first_start = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    if first_start and name == where and _counts[name] == n and int(os.environ.get("RANK", 0)) == rank:
        os.kill(os.getpid(), signal.SIGKILL)
