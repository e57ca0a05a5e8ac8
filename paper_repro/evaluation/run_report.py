"""A run's report: its results beside the paper's, its deviations, curves, Figures 3 and 4, as markdown.

The figures are drawn by figures.py, Figure 3's measure is colour.py's, the fc7 search is
features.py's and the data set is named by data/store.py.
"""
import datetime
import json
import math
import os

from paper_repro.core.atomic import atomic_write
from paper_repro.core.recipe import LEGACY_RECIPE, PAPER_CLASSES, RECIPE, RECIPE_VALUES, deviations, with_legacy
from paper_repro.data.store import ImageNetStore, class_names, dataset_identity, load_stats, store_classes
from paper_repro.evaluation.colour import RANDOM_COLOUR_RATIO, compare_columns
from paper_repro.evaluation.features import nearest_neighbours
from paper_repro.evaluation.figures import (as_percent, conv1_columns, plot_conv1, plot_curves, plot_neighbours,
                                            plot_step_losses, short_names)
from paper_repro.evaluation.released_runs import released_section
from paper_repro.nets.checkpoint import CHECKPOINT, load_model

PROG = "python -m paper_repro.report"  # errors name the command the user ran

# The paper's Table 1 / Table 2 rows (section 6): data set, split, nets averaged, top-1 %, top-5 %.
PAPER_ROWS = (
    ("ILSVRC-2010", "test", 1, 37.5, 17.0),
    ("ILSVRC-2012", "val", 1, 40.7, 18.2),
    ("ILSVRC-2012", "val", 5, 38.1, 16.4),
    ("ILSVRC-2012", "test", 5, None, 16.4),
)
DEVIATION, NOT_RECORDED = "**DEVIATION**", "not recorded"
BOTH, AS_RELEASED, AS_TEXT = "as both", "as released-2012", "as paper-text"
EVAL_KEYS = ("top1_error", "top5_error", "split", "views", "checkpoints")


# ----------------------------------------------------------------------------- run files

def read_run(run):
    """Return (config dict, list of per-epoch log dicts) of RUN."""
    cfg_path = os.path.join(run, "config.json")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"--run {run}: no config.json; pass a folder written by python -m paper_repro.train")
    with open(cfg_path) as f:
        config = json.load(f)
    log = []
    log_path = os.path.join(run, "log.jsonl")
    if os.path.isfile(log_path):
        with open(log_path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        log.append(json.loads(line))
                    except ValueError:
                        pass  # a line cut by a kill mid-write; the epochs before it still count
    return config, log


def read_eval(path):
    """One result file of python -m paper_repro.evaluate, with a clear error for anything else."""
    try:
        with open(path) as f:
            e = json.load(f)
    except OSError as err:
        raise FileNotFoundError(f"--eval {path}: cannot be read ({err.strerror or err})") from None
    except ValueError as err:
        raise ValueError(f"--eval {path}: not JSON ({err}); pass the --json file of python -m paper_repro.evaluate") \
            from None
    missing = [k for k in EVAL_KEYS if not isinstance(e, dict) or k not in e]
    if missing:
        raise ValueError(f"--eval {path}: not a python -m paper_repro.evaluate result (no {', '.join(missing)})")
    e["_path"] = path
    return e


def recipe_rows(config):
    """Rows (what, released-2012 value, paper-text value, this run's value or "-", status) for every recipe key.

    A key is looked up in config.json and then in its "model_config"; a run written before a key
    existed gets what the key meant then (recipe.with_legacy). The number of classes
    (recipe.PAPER_CLASSES) is listed too, after the net's settings. Status: which recipe the value
    is (both, one of them) or DEVIATION when it is neither.
    """
    settings = {**(config.get("model_config") or {}), **{k: v for k, v in config.items() if k != "model_config"}}
    if settings:
        settings = with_legacy(settings)
    released = {key for key, _, _ in deviations(settings, "released-2012")}
    text = {key for key, _, _ in deviations(settings, "paper-text")}
    keys = list(RECIPE)
    keys.insert(keys.index("dropout_scaling") + 1, "num_classes")
    rows = []
    for key in keys:
        if key == "num_classes":
            what, code, printed = "classes", PAPER_CLASSES, PAPER_CLASSES
            off = "num_classes" in settings and settings["num_classes"] != PAPER_CLASSES
            status = DEVIATION if off else BOTH
        else:
            what, code, printed = RECIPE[key][2], RECIPE_VALUES["released-2012"][key], RECIPE_VALUES["paper-text"][key]
            status = {(False, False): BOTH, (False, True): AS_RELEASED, (True, False): AS_TEXT,
                      (True, True): DEVIATION}[(key in released, key in text)]
        if key not in settings:
            rows.append((what, code, printed, "-", NOT_RECORDED))
        else:
            rows.append((what, code, printed, settings[key], status))
    return rows


def chance_errors(num_classes):
    """(top-1, top-5) error of a random guess among `num_classes`: a random ranking misses the label with 1 - k/C."""
    return 1 - 1 / num_classes, max(0.0, 1 - 5 / num_classes)


# ----------------------------------------------------------------------------- markdown

def _fmt(v, digits=1):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _md_value(v):
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, (int, float)):
        return f"{v:g}"
    return f"`{v}`" if isinstance(v, str) else f"`{json.dumps(v)}`"


def results_table(evals, log, run_data, num_classes):
    """Markdown lines: the paper's rows with measured cells where a matching measurement exists, then the rest."""
    measured = []
    for e in evals:
        ident = dataset_identity(e.get("data"), e.get("store_classes"))
        measured.append({
            "source": ident, "split": e["split"], "nets": len(e.get("checkpoints", [])) or 1,
            "views": e.get("views"), "top1": 100 * e["top1_error"], "top5": 100 * e["top5_error"],
            "checkpoints": ", ".join(os.path.basename(os.path.dirname(c["path"])) + "/" + os.path.basename(c["path"])
                                     if isinstance(c, dict) else str(c) for c in e.get("checkpoints", [])),
            "images": e.get("images"), "origin": "evaluate",
        })
    if log and log[-1].get("val_top1_error") is not None:
        last = log[-1]
        t1, t5 = as_percent([last.get("val_top1_error"), last.get("val_top5_error")])
        measured.append({
            "source": dataset_identity(run_data, num_classes), "split": "val", "nets": 1, "views": 1,
            "top1": t1, "top5": t5, "checkpoints": f"training log, epoch {last.get('epoch', len(log) - 1)}",
            "images": None, "origin": "log",
        })
    tested = [e for e in log if e.get("val_ten_view_top1_error") is not None]  # train --ten-view-every N
    if tested:
        last = tested[-1]
        t1, t5 = as_percent([last["val_ten_view_top1_error"], last.get("val_ten_view_top5_error")])
        measured.append({
            "source": dataset_identity(run_data, num_classes), "split": "val", "nets": 1,
            "views": last.get("ten_view_views", 10), "top1": t1, "top5": t5,
            "checkpoints": f"training log, epoch {last.get('epoch', len(log) - 1)} (ten-view test)",
            "images": None, "origin": "log",
        })
    lines = [
        "| data set | split | nets | paper top-1 % | paper top-5 % | measured top-1 % | measured top-5 % "
        "| views | checkpoints | images |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    used = set()
    for name, split, nets, p1, p5 in PAPER_ROWS:
        match = [i for i, m in enumerate(measured)
                 if m["source"]["imagenet"] and f"ILSVRC-{m['source']['year']}" == name and m["split"] == split
                 and (m["nets"] == 1) == (nets == 1)]
        if not match:
            lines.append(f"| {name} | {split} | {'1 CNN' if nets == 1 else f'{nets} CNNs'} | {_fmt(p1)} | {_fmt(p5)} "
                         f"|  |  |  |  |  |")
        for i in match:
            m = measured[i]
            used.add(i)
            lines.append(f"| {name} | {split} | {'1 CNN' if nets == 1 else f'{nets} CNNs'} | {_fmt(p1)} | "
                         f"{_fmt(p5)} | {_fmt(m['top1'], 2)} | {_fmt(m['top5'], 2)} | {m['views']} "
                         f"| {m['checkpoints']} ({m['nets']} net{'s' if m['nets'] > 1 else ''}) "
                         f"| {_fmt(m['images'])} |")
    for i, m in enumerate(measured):
        if i in used:
            continue
        lines.append(f"| {m['source']['name']} | {m['split']} | {m['nets']} CNN{'s' if m['nets'] > 1 else ''} "
                     f"| (no paper figure) |  | {_fmt(m['top1'], 2)} | {_fmt(m['top5'], 2)} | {m['views']} "
                     f"| {m['checkpoints']} | {_fmt(m['images'])} |")
    return lines


def results_section(evals, log, data, num_classes, settings=None):
    """Markdown lines of section 1: the results table, the chance level, the top-5 caveat for <= 5 classes."""
    md = ["## 1. Results beside the paper", "",
          "Errors in %. The paper's numbers are 10-view (four corners, centre and their reflections, softmax "
          "averaged); a measured cell appears only where a measurement on the same data set, split and kind "
          "of model (1 net vs an ensemble) exists. `views` says how each measurement was made.", ""]
    md += results_table(evals, log, data, num_classes)
    if num_classes:
        t1, t5 = chance_errors(num_classes)
        md += ["", f"Chance level with {num_classes} classes (a random guess): top-1 error {100 * t1:.1f} %, "
                   f"top-5 error {100 * t5:.1f} %. A measured error near these says the net has learnt nothing."]
    if num_classes is not None and num_classes <= 5:
        md += ["", f"With {num_classes} classes the top-5 error is 0 by construction (every label is among the "
                   "5 best)."]
    return md + [""] + released_section(settings or {})


def config_section(config):
    """Markdown lines: the recipe the run used, its deviations from both recipes, the table, the resolved config.json."""
    rows = recipe_rows(config)
    dev = [r for r in rows if r[4] == DEVIATION]
    recipe = config.get("recipe", LEGACY_RECIPE if config else None)
    named = {"released-2012": "the authors' released 2012 code (layers-145.cfg, layer-params-145.cfg)",
             "paper-text": "the paper's text", LEGACY_RECIPE: "the paper's text as this project read it before the "
             "authors' code was released (inverted dropout, one init std)"}.get(recipe, str(recipe))
    md = ["## 2. Configuration and deviations from the paper's recipe", "",
          f"Recipe: `{recipe}`, {named}. "
          f"{len(dev)} setting{'s' if len(dev) != 1 else ''} differ{'s' if len(dev) == 1 else ''} from both the "
          "released code and the paper's text"
          + (": " + "; ".join(f"{r[0]} {_md_value(r[3])} (code {_md_value(r[1])}, text {_md_value(r[2])})"
                              for r in dev) + "." if dev else "."),
          "", "| setting | released-2012 | paper-text | this run | |", "|---|---|---|---|---|"]
    md += [f"| {w} | {_md_value(c)} | {_md_value(p)} | {_md_value(v) if v != '-' else '-'} | {s} |"
           for w, c, p, v, s in rows]
    md += ["", "<details><summary>config.json (resolved)</summary>", "", "```json",
           json.dumps(config, indent=2, sort_keys=True), "```", "</details>", ""]
    return md


def read_steps(run):
    """The training loss at every read-back (RUN/steps.jsonl, written by train); [] if there is none."""
    steps = []
    path = os.path.join(run, "steps.jsonl")
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                if line.endswith("\n"):  # a line cut by a kill mid-write is left out
                    steps.append(json.loads(line))
    return steps


def _curves_section(log, out, steps=(), num_classes=None, stall_steps=None):
    md = ["## 3. Training curves", ""]
    if steps and num_classes:
        last = steps[-1]["step"]
        # The stall check's marker only where the run got to it: a shorter run's axis ends at its last step.
        marked = stall_steps if stall_steps and stall_steps <= last else None
        plot_step_losses({"training loss": steps}, math.log(num_classes), os.path.join(out, "steps.png"),
                         stall_step=marked)
        md += ["![training loss per step](steps.png)", "",
               f"The training loss at every read-back ({len(steps)} of them, up to step {last}); the dotted line "
               f"is ln({num_classes}), the loss of uniform guessing, where a net that does not learn stays"
               + (f"; the dashed grey line, step {marked}, is where the stall check looked" if marked else "")
               + ".", ""]
    if not log:
        return md + ["No log.jsonl in the run: no per-epoch curves.", ""]
    drops = plot_curves(log, os.path.join(out, "curves.png"))
    lr = f"learning rate {log[0].get('lr'):g} -> {log[-1].get('lr'):g}; "
    if drops:
        lr += (f"dropped (/10) after epoch{'s' if len(drops) != 1 else ''} {', '.join(map(str, drops))} "
               f"(dashed red line{'s' if len(drops) != 1 else ''})")
    else:
        lr += "no drop"
    return md + ["![training curves](curves.png)", "",
                 f"{len(log)} epoch{'s' if len(log) != 1 else ''} logged; {lr}. "
                 "Validation errors during training are centre-patch (1 view) errors"
                 + (", and at the epochs marked \"ten views\" also the paper's ten-view test (`train "
                    "--ten-view-every N`)" if any(e.get("val_ten_view_top1_error") is not None for e in log)
                    else "") + "." + _budget_sentence(log), ""]


def _budget_sentence(log):
    """What a `train --minutes` budget did to the run's length ("" for a run without one)."""
    planned = [e["planned_epochs"] for e in log if e.get("planned_epochs") is not None]
    if not planned:
        return ""
    span = f"{min(planned)}" if min(planned) == max(planned) else f"{min(planned)}-{max(planned)}"
    return (f" A `train --minutes` budget set the run's length after every epoch from the time left: planned "
            f"{span} epochs, {planned[-1]} at the end.")


def columns_sentence(kernels_a, kernels_b):
    """The sentence under Figure 3's table: what the difference between the two columns means, if anything."""
    c = compare_columns(kernels_a, kernels_b)
    a, b, (ka, kb) = c["a"], c["b"], c["counts"]
    lo, hi = c["ranges"][0]  # both columns have as many kernels of one shape: one range
    shape = "x".join(str(int(d)) for d in kernels_a.shape[1:])
    level = f"{100 * c['level']:.0f}"
    simulated = (f"{lo:.3f}-{hi:.3f}, the range that holds {level}% of the measure for a column of {ka} random "
                 f"N(0, 1) kernels of {shape} ({c['draws']} simulated columns, seed {c['seed']})")
    shuffles = (f"the {level}th percentile of the difference when the {ka + kb} kernels are shuffled at random "
                f"between two columns of {ka} and {kb} ({c['draws']} shuffles, seed {c['seed']})")
    if c["verdict"] == "random":
        return (f"Both columns sit at the level of random weights: {a:.3f} and {b:.3f} lie inside {simulated}. "
                "The difference between them means nothing: these kernels show neither the paper's "
                "colour-agnostic column nor its colour-specific one.")
    if c["verdict"] == "noise":
        return (f"Column 0 measures {a:.3f} and column 1 {b:.3f}: the difference ({abs(a - b):.3f}) is within noise "
                f"and means nothing. A difference counts only above {c['threshold']:.3f}, {shuffles}; "
                f"{c['p']:.0%} of the shuffles give a difference at least this large.")
    places = " and ".join(f"column {i} is {place} it" for i, place in enumerate(c["places"]))
    p = f"p = {c['p']:.3f}" if c["p"] > 0 else f"p < {1 / c['draws']:g}"
    return (f"Here column 0 is {'less' if a < b else 'more'} colour-specific than column 1 ({a:.3f} vs {b:.3f}): "
            f"the difference exceeds {c['threshold']:.3f}, {shuffles}; {p}. Random weights measure {simulated}: "
            f"{places}. The paper's specialisation would show as one column well below that range and the other "
            "well above it (which GPU gets which varies between runs).")


def _conv1_section(ckpt, ckpt_path, model_config, out):
    md = ["## 4. Figure 3: the conv1 kernels", ""]
    if ckpt is None or "conv1.weight" not in ckpt.get("model", {}):
        return md + [f"No checkpoint at `{ckpt_path}`: no Figure 3.", ""]
    conv1 = ckpt["model"]["conv1.weight"]
    two = model_config.get("variant", "two-column") == "two-column"
    measures = plot_conv1(conv1, os.path.join(out, "conv1_kernels.png"), two)
    md += ["![conv1 kernels](conv1_kernels.png)", "",
           f"{conv1.shape[0]} kernels of {conv1.shape[1]}x{conv1.shape[2]}x{conv1.shape[3]}, each stretched "
           "to the full display range on its own. Colour specificity = mean over kernels of the share of a "
           "kernel's energy (sum of squared weights) that lies in its chromatic part (the weights minus "
           "their mean over R, G, B at each pixel): 0 for a grey kernel, 1 for a kernel whose colours sum to "
           f"zero at every pixel, about {RANDOM_COLOUR_RATIO:.2f} for random weights. The paper: GPU 1's "
           "kernels come out largely colour-agnostic, GPU 2's largely colour-specific.", "",
           "| column | colour specificity |", "|---|---|"]
    md += [f"| {k} | {v:.3f} |" for k, v in measures.items()]
    if two:
        md += ["", columns_sentence(*conv1_columns(conv1, True).values())]
    return md + [""]


def shared_sentence(same, total):
    """How many of Figure 4's neighbours share their query's class, as a sentence ("1 of 30 neighbours shares ...")."""
    return f"{same} of {total} neighbours {'shares' if same == 1 else 'share'} the query's class."


def _neighbours_section(ckpt_path, data, out, devices, queries, pool, workers, progress):
    md = ["## 5. Figure 4: nearest neighbours in fc7", ""]
    if not os.path.isfile(ckpt_path):
        return md + [f"No checkpoint at `{ckpt_path}`: no Figure 4.", ""]
    try:
        train, val = ImageNetStore(data, "train"), ImageNetStore(data, "val")
    except (OSError, ValueError, TypeError) as e:
        return md + [f"Figure 4 needs the store's train and val splits (`--data`): not drawn ({e}).", ""]
    model = load_model(ckpt_path, devices)
    neigh, searched = nearest_neighbours(model, val, train, load_stats(data)["mean_image"], queries, pool,
                                         workers=workers, progress=progress)
    names = class_names(data)  # the classes in words (data/store.py); None when it has none
    plot_neighbours(neigh, val, train, os.path.join(out, "neighbours.png"), short_names(names) if names else None)
    same = sum(train.labels[j] == val.labels[n["val"]] for n in neigh for j in n["train"])
    total = sum(len(n["train"]) for n in neigh)
    # In words with the id beside them where the store names its classes; else the ids alone, once.
    queries_named = " Query classes: " + "; ".join(
        f"val {n['val']}: " + (f"{names[label]} ({val.classes[label]})" if names else val.classes[label])
        for n in neigh for label in [val.labels[n["val"]]]) + "."
    return md + ["![fc7 nearest neighbours](neighbours.png)", "",
                 f"Left column: {len(neigh)} validation images (evenly spaced through the split). The other "
                 "columns: the training images whose fc7 vectors (4096 x width post-ReLU activations of the "
                 "centre patch, eval mode) are nearest in Euclidean distance, nearest first; green title = same "
                 "class as the query, red = another class. Searched: "
                 + (f"all {searched} training images." if searched == len(train) else
                    f"{searched} of the {len(train)} training images (a fixed random sample, seed 0; "
                    "`--pool` sets the number), not the whole set as in the paper.")
                 + " " + shared_sentence(same, total) + queries_named, ""]


def write_report(run, config, log, ckpt, out, evals=(), data=None, devices=("cpu",), queries=5, pool=5000, workers=0,
                 progress=True):
    """Write OUT/report.md and its figures for RUN (its config, log and checkpoint, as read_inputs read them)."""
    data = data or config.get("data")
    os.makedirs(out, exist_ok=True)
    ckpt_path = os.path.join(run, CHECKPOINT)
    model_config = config.get("model_config") or (ckpt or {}).get("model_config") or {}
    ident = dataset_identity(data, model_config.get("num_classes"))
    num_classes = store_classes(data) or model_config.get("num_classes")
    md = [f"# AlexNet reproduction report: `{run}`", "",
          f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} by "
          "`python -m paper_repro.report`. Paper: Krizhevsky, Sutskever & Hinton, NIPS 2012.", "",
          f"Data: `{data}`: **{ident['name']}**."]
    names = class_names(data) or []
    if len(names) <= 20 and names:  # a subset's classes in words; 1000 would drown the page
        md[-1] += f" Classes: {', '.join(names)}."
    if not ident["imagenet"]:
        md.append("It is not the paper's data (ILSVRC-2010 or ILSVRC-2012), so none of the numbers below can be "
                  "compared with the paper's; the paper's rows are shown for reference only and their measured "
                  "cells stay empty.")
    md.append("")
    md += results_section(evals, log, data, num_classes, {**model_config, **config})
    md += config_section(config)
    md += _curves_section(log, out, read_steps(run), num_classes, config.get("stall_steps"))
    md += _conv1_section(ckpt, ckpt_path, model_config, out)
    md += _neighbours_section(ckpt_path, data, out, devices, queries, pool, workers, progress)
    if evals:
        md += ["## Evaluation files", ""] + [f"- `{e.get('_path')}`: {e['split']}, {e.get('views')} views, "
                                             f"{len(e.get('checkpoints', []))} net(s), {e.get('images')} images, "
                                             f"{_fmt(e.get('images_per_s'))} images/s" for e in evals] + [""]
    path = os.path.join(out, "report.md")
    atomic_write(path, lambda f: f.write("\n".join(md)), mode="w")
    return path


# ----------------------------------------------------------------------------- command line
