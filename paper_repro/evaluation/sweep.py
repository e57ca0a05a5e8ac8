"""A sweep's table: run folders grouped by their resolved settings, seeds pooled, differences against a reference.

A run's result is its ten-view error on the val split (RUN/eval*.json, written by `python -m
paper_repro.evaluate --views 10 --json`, or the last epoch's own line in RUN/log.jsonl from `train
--ten-view-every N`) when one of its last epoch is there, else the centre-patch
val error of the last epoch of RUN/log.jsonl. Runs are grouped by RUN/config.json minus the keys that
name the run or say how it ran (IGNORED: seed, paths, devices, workers, logging, precision switches
that resume may change); a group's errors are pooled over its seeds (mean, sample std, min-max, n).
A difference against the reference group is paired by seed when both groups ran the same seeds, and
unpaired otherwise; its spread is the std of a one-seed difference, and the 95 % t interval of the mean
difference says whether these runs resolve it. The figure is sweep_figure.py's.
"""
import glob
import json
import math
import os
import statistics

from scipy.stats import t as student_t

from paper_repro.core.cli import UsageError

PROG = "python -m paper_repro.sweep"
# Keys of config.json that do not define a setting: the run's name and seed, where its files are, and
# what `python -m paper_repro.train --resume` may change (training/settings.py CHANGEABLE_ON_RESUME),
# less --epochs and --minutes (a shorter schedule, or a budget, is another setting), plus what train records
# about the machine.
IGNORED = ("seed", "out", "data", "config", "resume", "auto_resume", "gpus", "devices", "workers", "workers_used",
           "checkpoint_every", "log_every", "stall_steps", "progress", "bf16", "channels_last", "tf32", "decode",
           "keep_freed_memory", "ten_view_every", "host_memory", "precision", "torch_version", "world_size",
           "explicit")
# Recorded copies of other settings (the model's own config, the per-layer init std the width gives):
# grouped on, but named in a label only when nothing else tells the groups apart.
DERIVED = ("model_config", "init_std_per_layer")
TEN_VIEW, CENTRE = "ten-view", "centre"


# ----------------------------------------------------------------------------- one run

def flatten(config, prefix=""):
    """{"a.b": value} of a nested config dict; lists become JSON text so that values can be compared."""
    flat = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten(v, key + "."))
        else:
            flat[key] = json.dumps(v) if isinstance(v, list) else v
    return flat


def settings_key(config, ignore=()):
    """The settings that define a run's group: config.json flattened, IGNORED and `ignore` left out."""
    skip = set(IGNORED) | set(ignore)
    return {k: v for k, v in flatten(config).items() if k.split(".")[0] not in skip and k not in skip}


def _read_log(path):
    log = []
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                try:
                    log.append(json.loads(line))
                except ValueError:
                    pass  # a line cut by a kill mid-write
    return [e for e in log if isinstance(e, dict)]


def _ten_view(run, warnings, split="val"):
    """(top-1, top-5, epoch, file) of RUN's newest one-net ten-view evaluation of `split`, or None.

    split: the run's own validation split (config.json's val_split: a CIFAR-10 run validates on test).
    """
    found = []
    for path in sorted(glob.glob(os.path.join(run, "eval*.json"))):
        try:
            with open(path) as f:
                e = json.load(f)
            ok = isinstance(e, dict) and all(k in e for k in ("top1_error", "top5_error", "views"))
        except (OSError, ValueError):
            ok = False
        if not ok:
            warnings.append(f"{path}: not a python -m paper_repro.evaluate --json result; skipped")
            continue
        ckpts = e.get("checkpoints") or []
        if e.get("split", "val") != split or e["views"] != 10 or len(ckpts) > 1:
            continue  # another split, the centre patch only, or an ensemble: not this run's ten-view error
        # evaluate gives each checkpoint's "epochs_done"; paper_repro.baseline's own file (val only) its run's
        epoch = ckpts[0].get("epochs_done") if ckpts and isinstance(ckpts[0], dict) else e.get("epochs_done")
        found.append((e["top1_error"], e["top5_error"], epoch, path))
    return max(found, key=lambda t: (t[2] or 0, t[3])) if found else None


def _span(values):
    """One value, or "low-high" where runs of one group differ (budget runs that fit different lengths)."""
    known = sorted({v for v in values if v is not None})
    return known[0] if len(known) == 1 else f"{known[0]}-{known[-1]}" if known else None


def read_run(run, ignore=()):
    """One run folder: its seed, settings key and results; a UsageError for a folder that is not a finished-epoch run.

    Returns {"run", "seed", "key", "epochs", "results": {kind: (top-1, top-5)}, "epoch": {kind: epoch},
    "warnings"}; errors are fractions as the run's files hold them.
    """
    path = os.path.join(run, "config.json")
    if not os.path.isdir(run):
        raise UsageError(f"--runs {run}: no such folder; pass run folders written by python -m paper_repro.train")
    try:
        with open(path) as f:
            config = json.load(f)
    except OSError:
        raise UsageError(f"--runs {run}: not a run folder (no config.json); pass folders written by "
                         "python -m paper_repro.train --out RUN") from None
    except ValueError as e:
        raise UsageError(f"--runs {run}: config.json is not JSON ({e})") from None
    if not isinstance(config, dict):
        raise UsageError(f"--runs {run}: config.json is not a training run's settings")
    config.setdefault("minutes", 0.0)  # a run from before train --minutes: no budget, as --minutes 0 now
    warnings, results, epoch = [], {}, {}
    log = [e for e in _read_log(os.path.join(run, "log.jsonl")) if e.get("val_top1_error") is not None]
    if log:
        last = log[-1]
        results[CENTRE] = (last["val_top1_error"], last.get("val_top5_error"))
        epoch[CENTRE] = last.get("epoch", len(log))
    ten = _ten_view(run, warnings, config.get("val_split", "val"))
    last_test = log[-1] if log and log[-1].get("val_ten_view_top1_error") is not None else None
    if last_test and last_test.get("ten_view_views", 10) == 10 and (ten is None or (ten[2] or 0) < epoch[CENTRE]):
        # train --ten-view-every N tested its last epoch itself (ten views: a whole-image CIFAR net's one is not)
        ten = (last_test["val_ten_view_top1_error"], last_test.get("val_ten_view_top5_error"), epoch[CENTRE],
               os.path.join(run, "log.jsonl"))
    if ten and log and ten[2] is not None and ten[2] < epoch[CENTRE]:
        warnings.append(f"{ten[3]}: ten-view errors of epoch {ten[2]}, but log.jsonl reaches epoch {epoch[CENTRE]}; "
                        f"using the centre errors of epoch {epoch[CENTRE]} (evaluate the last checkpoint)")
    elif ten:
        results[TEN_VIEW], epoch[TEN_VIEW] = ten[:2], ten[2]
    if not results:
        raise UsageError(f"--runs {run}: no results yet (no val errors in log.jsonl, no ten-view RUN/eval*.json); "
                         "let it finish an epoch or leave it out")
    # a run under a --minutes budget trained the epochs that fit (its log's last), not its --epochs
    trained = epoch.get(CENTRE) if config.get("minutes") else None
    return {"run": run, "seed": config.get("seed"), "key": settings_key(config, ignore),
            "epochs": trained or config.get("epochs"),
            "results": results, "epoch": epoch, "warnings": warnings}


# ----------------------------------------------------------------------------- groups

def group_runs(runs):
    """Runs with equal settings keys together, in the order their first run was given: [[run, ...], ...]."""
    groups = []
    for r in runs:
        for g in groups:
            if g[0]["key"] == r["key"]:
                g.append(r)
                break
        else:
            groups.append([r])
    return groups


def pooled(values):
    """{"mean", "std" (sample, n-1; None for one value), "min", "max", "n"} of `values`."""
    values = list(values)
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values), "max": max(values), "n": len(values)}


def kind_of(group):
    """The measure every run of the group has: ten-view where all have it, else centre (None if neither)."""
    for kind in (TEN_VIEW, CENTRE):
        if all(kind in r["results"] for r in group):
            return kind
    return None


def group_stats(group, kind):
    """{"top1": pooled, "top5": pooled} of a group's runs under measure `kind`."""
    return {m: pooled(r["results"][kind][i] for r in group) for i, m in enumerate(("top1", "top5"))
            if all(r["results"][kind][i] is not None for r in group)}


def _unique_seeds(group):
    seeds = [r["seed"] for r in group]
    return None if None in seeds or len(set(seeds)) != len(seeds) else seeds


def _interval(d):
    """Add "ci" (half-width of the 95 % t interval of the mean difference) and "resolved" (it excludes 0) to d."""
    ok = d["se"] is not None and d["df"] and d["df"] > 0
    ci = float(student_t.ppf(0.975, d["df"])) * d["se"] if ok else None
    return {**d, "ci": ci, "resolved": bool(ci is not None and abs(d["mean"]) > ci)}


def difference(group, reference, kind, metric=0):
    """group - reference under measure `kind` (metric 0: top-1, 1: top-5), paired by seed when both ran the same seeds.

    {"mean", "std" (of a one-seed difference), "se" (of the mean difference), "df", "ci", "resolved", "min",
    "max", "n", "paired"}: paired, the per-seed differences' std, se = std / sqrt(n), df = n - 1; unpaired,
    std = sqrt(sa^2 + sb^2), se = sqrt(sa^2/na + sb^2/nb) and Welch's df. std, se and ci are None where
    a group has one run (unpaired) or there is one pair.
    """
    seeds, ref_seeds = _unique_seeds(group), _unique_seeds(reference)
    if seeds and ref_seeds and sorted(seeds) == sorted(ref_seeds):
        ref = {r["seed"]: r["results"][kind][metric] for r in reference}
        d = pooled(r["results"][kind][metric] - ref[r["seed"]] for r in group)
        d["se"] = d["std"] / math.sqrt(d["n"]) if d["std"] is not None else None
        return _interval({**d, "df": d["n"] - 1, "paired": True})
    a = pooled(r["results"][kind][metric] for r in group)
    b = pooled(r["results"][kind][metric] for r in reference)
    both = a["std"] is not None and b["std"] is not None
    va, vb = (a["std"] ** 2 / a["n"], b["std"] ** 2 / b["n"]) if both else (0, 0)
    df = (va + vb) ** 2 / (va ** 2 / (a["n"] - 1) + vb ** 2 / (b["n"] - 1)) if both and va + vb > 0 else None
    return _interval({"mean": a["mean"] - b["mean"], "std": math.hypot(a["std"], b["std"]) if both else None,
                      "se": math.sqrt(va + vb) if both else None, "df": df, "min": a["min"] - b["max"],
                      "max": a["max"] - b["min"], "n": (a["n"], b["n"]), "paired": False})


def _value(v):
    return v if isinstance(v, str) else json.dumps(v)


def labels(groups, reference=None):
    """Each group's label: the settings where it differs from the reference group (or, without one, from the others)."""
    keys = sorted(set().union(*(g[0]["key"] for g in groups)))
    base = groups[reference][0]["key"] if reference is not None else None
    out = []
    for i, g in enumerate(groups):
        k = g[0]["key"]
        if base is not None:
            differ = [x for x in keys if k.get(x) != base.get(x)]
        else:
            differ = [x for x in keys if len({_value(h[0]["key"].get(x)) for h in groups}) > 1]
        plain = [x for x in differ if x.split(".")[0] not in DERIVED] or differ
        text = ", ".join(f"{x}={_value(k[x])}" for x in plain if x in k)
        absent = [x for x in plain if x not in k]  # e.g. a paper_repro.baseline run has none of the net's keys
        if absent:
            text += f"{'; ' if text else ''}without {', '.join(absent) if len(absent) <= 3 else f'{len(absent)} keys'}"
        out.append("reference" if i == reference else text or "(same settings)")
    return out


def sweep(run_dirs, reference=None, ignore=()):
    """Read, group and pool the runs; the dict the markdown, the JSON and the figure are made from."""
    runs = [read_run(r, ignore) for r in run_dirs]
    ref_index = None
    if reference is not None:
        ref_run = read_run(reference, ignore)
        if not any(os.path.samefile(r["run"], reference) for r in runs):
            runs.append(ref_run)
    groups = group_runs(runs)
    if reference is not None:
        ref_index = next(i for i, g in enumerate(groups) if g[0]["key"] == ref_run["key"])
    rows = []
    for i, (g, label) in enumerate(zip(groups, labels(groups, ref_index))):
        kind = kind_of(g)
        row = {"group": chr(ord("A") + i) if i < 26 else f"G{i + 1}", "label": label, "runs": [r["run"] for r in g],
               "seeds": [r["seed"] for r in g], "epochs": _span([r["epochs"] for r in g]), "kind": kind, **group_stats(g, kind)}
        if ref_index is not None and i != ref_index:
            ref = groups[ref_index]
            common = next((k for k in (TEN_VIEW, CENTRE)
                           if all(k in r["results"] for r in g + ref)), None)
            row["diff_kind"] = common
            if common:
                row["diff_top1"] = difference(g, ref, common, 0)
                if all(r["results"][common][1] is not None for r in g + ref):
                    row["diff_top5"] = difference(g, ref, common, 1)
        rows.append(row)
    return {"groups": rows, "reference": ref_index, "runs": runs,
            "warnings": [w for r in runs for w in r["warnings"]]}


# ----------------------------------------------------------------------------- markdown

def _pct(p, digits=2):
    """'mean ± std (min-max, n)' of a pooled fraction, in %."""
    if p is None:
        return ""
    sd = f" ± {100 * p['std']:.{digits}f}" if p["std"] is not None else ""
    spread = f" ({100 * p['min']:.{digits}f}-{100 * p['max']:.{digits}f}, n={p['n']})" if p["n"] > 1 else " (n=1)"
    return f"{100 * p['mean']:.{digits}f}{sd}{spread}"


def _diff(d, digits=2):
    """'+1.23 ± 0.45 (95 % CI +0.11 to +2.35; 3 pairs by seed)' of a difference of fractions, in percentage points."""
    if d is None:
        return ""
    sd = f" ± {100 * d['std']:.{digits}f}" if d["std"] is not None else ""
    ci = (f"95 % CI {100 * (d['mean'] - d['ci']):+.{digits}f} to {100 * (d['mean'] + d['ci']):+.{digits}f}; "
          if d["ci"] is not None else "")
    if d["paired"]:
        n = f"{d['n']} pair{'s' if d['n'] != 1 else ''} by seed"
    else:
        n = f"unpaired, n={d['n'][0]} vs {d['n'][1]}"
    resolved = " **resolved**" if d["resolved"] else ""
    return f"{100 * d['mean']:+.{digits}f}{sd} ({ci}{n}){resolved}"


def group_table(result):
    """The markdown table of the groups (what the command prints)."""
    rows, ref = result["groups"], result["reference"]
    head = "| group | settings | seeds | epochs | measure | top-1 % | top-5 % |"
    rule = "|---|---|---|---|---|---|---|"
    if ref is not None:
        head += " Δ top-1 (pp) | Δ top-5 (pp) |"
        rule += "---|---|"
    lines = [head, rule]
    for i, r in enumerate(rows):
        seeds = ", ".join(str(s) for s in r["seeds"])
        line = (f"| {r['group']} | {r['label']} | {seeds} | {r['epochs']} | {r['kind']} | {_pct(r.get('top1'))} "
                f"| {_pct(r.get('top5'))} |")
        if ref is not None:
            if i == ref:
                line += " (reference) | |"
            else:
                mixed = r.get("diff_kind") and r["diff_kind"] not in (r["kind"], rows[ref]["kind"])
                kind = f"{r['diff_kind']}: " if mixed or r["kind"] != rows[ref]["kind"] else ""
                top1 = f"{kind}{_diff(r['diff_top1'])}" if r.get("diff_top1") else ""
                top5 = f"{kind}{_diff(r['diff_top5'])}" if r.get("diff_top5") else ""
                line += f" {top1} | {top5} |"
        lines.append(line)
    return lines


def markdown(result, figure=None, command=None):
    """The sweep's markdown lines: the group table, how to read it, the runs, any warnings."""
    rows, ref = result["groups"], result["reference"]
    n_runs = sum(len(r["runs"]) for r in rows)
    md = [f"# Sweep: {n_runs} runs in {len(rows)} group{'s' if len(rows) != 1 else ''}", ""]
    if command:
        md += [f"Made by `{command}`.", ""]
    md += ["Errors in % of the val split: `ten-view` is the run's RUN/eval*.json (`python -m paper_repro.evaluate "
           "--views 10 --json`) or its log's own test (`train --ten-view-every N`), of its last epoch, `centre` "
           "the centre-patch error of the last epoch in "
           "RUN/log.jsonl; a group uses ten-view only where every run has it. Cells: mean ± sample std over "
           "the group's runs (min-max, n). Runs are grouped by config.json without the seed, paths, devices "
           "and the other keys that do not change a run's settings.", ""]
    if ref is not None:
        md += [f"Δ: the group minus the reference (group {rows[ref]['group']}), in percentage points, on the "
               "measure both have; paired by seed where both groups ran the same seeds. ± is the std of a "
               "one-seed difference; the 95 % confidence interval of the mean difference is Student's t (n - 1 "
               "degrees of freedom paired, Welch's unpaired); **resolved** marks an interval that excludes 0.", ""]
    md += group_table(result)
    if figure:
        md += ["", f"![sweep]({figure})", "",
               "Left: each run's top-1 error (dots) and the group's mean ± std (bar). Right: the mean difference "
               "from the reference and its 95 % confidence interval; an interval that crosses zero is not "
               "resolved by these runs."]
    md += ["", "## Runs", "", "| run | group | seed | centre top-1 % (epoch) | ten-view top-1 % (epoch) |",
           "|---|---|---|---|---|"]
    group_of = {run: r["group"] for r in rows for run in r["runs"]}
    for run in result["runs"]:
        cells = []
        for kind in (CENTRE, TEN_VIEW):
            res = run["results"].get(kind)
            cells.append(f"{100 * res[0]:.2f} ({run['epoch'][kind]})" if res else "")
        md.append(f"| `{run['run']}` | {group_of[run['run']]} | {run['seed']} | {cells[0]} | {cells[1]} |")
    if result["warnings"]:
        md += ["", "## Warnings", ""] + [f"- {w}" for w in result["warnings"]]
    return md + [""]
