"""One way for every command to turn a failure into one clear line and an exit status.

    2    a bad flag, store, checkpoint or run folder (UsageError): nothing was started or changed
    1    the job failed while running (RunFailed: a diverged loss, a corrupt shard, a full disk)
    130  interrupted (Ctrl-C / SIGTERM); a training run has written a checkpoint first
"""
import argparse
import gc
import sys

USAGE, FAILED, INTERRUPTED = 2, 1, 130


class UsageError(ValueError):
    """A bad flag, store, checkpoint or run folder: one line, exit status 2, no traceback."""


class RunFailed(Exception):
    """The job started and could not go on (diverged, corrupt data, disk full): one line, exit status 1."""


class Interrupted(Exception):
    """The job was stopped by a signal after saving what it could: one line, exit status 130."""


def checked(fn, *args):
    """fn(*args), with a ValueError or FileNotFoundError (a bad flag, file or store, worded for the user) as UsageError."""
    try:
        return fn(*args)
    except UsageError:
        raise
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from e


def run(prog, fn, *args, **kwargs):
    """Call fn(*args, **kwargs); on a known failure print `prog: error: ...` to stderr and exit with its status."""
    try:
        return fn(*args, **kwargs)
    except UsageError as e:
        _exit(prog, f"error: {e}", USAGE)
    except RunFailed as e:
        _exit(prog, f"error: {e}", FAILED)
    except Interrupted as e:
        _exit(prog, f"interrupted: {e}", INTERRUPTED)
    except KeyboardInterrupt:
        _exit(prog, "interrupted (Ctrl-C); nothing more was written", INTERRUPTED)


def leave():
    """Let the process end without the interpreter's last garbage collection (call it as a command returns)."""
    # That collection walks every object torch created (`python -c "import torch"`: 3.42-3.67 s wall
    # without, 2.95-3.01 s with a freeze, 2 busy cores). Frozen, they are left to the OS, which takes
    # the memory back anyway; refcounted objects still go as usual.
    gc.freeze()


def _exit(prog, text, status):
    print(f"{prog}: {text}", file=sys.stderr, flush=True)
    sys.exit(status)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help for every command: the description as written, and each flag's default once, in words where a
    value would mislead.

    No "(default: ...)" for a required flag, for a default of None (the help says what happens), nor
    for a switch: an on/off pair names the one in effect ("(default: --progress)"), and a lone switch's
    help says what it turns on or off ("--no-colour-noise ... (default: the paper's colour noise is on)").
    """

    def _get_help_string(self, action):
        text = (action.help or "").replace(" (default: %(default)s)", "")  # BooleanOptionalAction's own, 3.9-3.12
        if isinstance(action, argparse.BooleanOptionalAction):
            return f"{text} (default: {action.option_strings[0 if action.default else 1]})"
        if action.required or action.default is None or action.nargs == 0 or "%(default)" in text:
            return text
        return super()._get_help_string(argparse.Namespace(**{**vars(action), "help": text}))
