"""python -m paper_repro.report: a run's results beside the paper's, its deviations, curves, Figures 3 and 4."""
import argparse
import datetime
import json
import math
import os

import numpy as np
import torch
from tqdm import tqdm

from paper_repro.checkpoint import atomic_write, load_checkpoint

# The paper's Table 1 / Table 2 rows (section 6): data set, split, nets averaged, top-1 %, top-5 %.
PAPER_ROWS = (
    ("ILSVRC-2010", "test", 1, 37.5, 17.0),
    ("ILSVRC-2012", "val", 1, 40.7, 18.2),
    ("ILSVRC-2012", "val", 5, 38.1, 16.4),
    ("ILSVRC-2012", "test", 5, None, 16.4),
)

# The paper's recipe (the authors' code where it differs), as (what, config keys to look for, value).
# Keys are searched in config.json and in its "model_config".
PAPER_RECIPE = (
    ("net width multiplier", ("width",), 1.0),
    ("architecture variant", ("variant",), "two-column"),
    ("input patch size", ("input_size",), 224),
    ("local response normalisation", ("lrn",), "code"),
    ("max-pooling", ("pooling",), "overlapping"),
    ("bias init in conv2, conv4, conv5, fc6, fc7", ("bias_init",), 1.0),
    ("dropout in fc6, fc7", ("dropout",), 0.5),
    ("classes", ("num_classes",), 1000),
    ("batch size", ("batch_size",), 128),
    ("initial learning rate", ("lr",), 0.01),
    ("momentum", ("momentum",), 0.9),
    ("weight decay", ("weight_decay",), 0.0005),
    ("learning-rate schedule", ("lr_schedule",), "plateau"),
    ("learning-rate drops (divide by 10), at most", ("lr_max_drops",), 3),
    ("epochs (cap)", ("epochs",), 90),
    ("PCA colour noise", ("colour_noise",), True),
    ("colour-noise std of a_i", ("colour_noise_std",), 0.1),
    ("colour-noise scale (sqrt of eigenvalues: authors' code)", ("colour_noise_scale",), "sqrt"),
    ("bf16 autocast (paper: fp32)", ("bf16",), False),
    ("channels_last memory layout", ("channels_last",), False),
)
RANDOM_COLOUR_RATIO = 2 / 3  # expected chromatic energy share of i.i.d. random RGB kernels


# ----------------------------------------------------------------------------- data set naming

ILSVRC2012_FIRST_LAST = ("n01440764", "n15075141")  # the sorted ILSVRC-2012 wnids start and end so
DEMO_FLAGS = ("demo", "generated", "synthetic")


def _read_json(path):
    try:
        with open(path) as f:
            obj = json.load(f)
        return obj if isinstance(obj, dict) else {}
    except (OSError, ValueError):
        return {}


def dataset_identity(root, num_classes=None):
    """Return {"name", "imagenet", "year"} for STORE, never calling a generated set ImageNet.

    ImageNet only when nothing says "demo" (the flag build_imagenet.py records in the store's
    settings when data_prep/make_demo_imagenet.py made the source), there are 1000 classes and, for
    2012, the class list starts and ends with the real ILSVRC-2012 wnids.
    """
    manifest = _read_json(os.path.join(root, "manifest.json")) if root else {}
    settings = manifest.get("settings") or (_read_json(os.path.join(root, "build.json")) if root else {})
    classes = manifest.get("classes") or []
    num_classes = len(classes) if classes else num_classes
    year = settings.get("year") if isinstance(settings.get("year"), int) else None
    demo = any(bool(d.get(k)) for d in (manifest, settings) for k in DEMO_FLAGS)
    if demo:
        return {"name": f"a generated demo data set ({num_classes} classes; not ImageNet)",
                "imagenet": False, "year": None}
    if num_classes != 1000:
        return {"name": f"a {num_classes}-class data set (not ImageNet: ILSVRC has 1000 classes)",
                "imagenet": False, "year": None}
    if year == 2012 and classes and (classes[0], classes[-1]) != ILSVRC2012_FIRST_LAST:
        return {"name": "a 1000-class data set whose classes are not ILSVRC-2012's (not ImageNet)",
                "imagenet": False, "year": None}
    if year in (2010, 2012):
        return {"name": f"ILSVRC-{year}", "imagenet": True, "year": year}
    return {"name": "a 1000-class store of unrecorded source (not compared with the paper)",
            "imagenet": False, "year": None}


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


def _lookup(config, keys):
    model_config = config.get("model_config") or {}
    for k in keys:
        if k in config:
            return True, config[k]
        if k in model_config:
            return True, model_config[k]
    return False, None


def _same(a, b):
    if isinstance(b, bool) or isinstance(a, bool):
        return bool(a) == bool(b) if isinstance(a, (bool, int)) and isinstance(b, bool) else a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def deviations(config):
    """Return rows (what, paper value, this run's value, status) comparing config.json to the paper's recipe."""
    rows = []
    for what, keys, paper in PAPER_RECIPE:
        found, value = _lookup(config, keys)
        if not found:
            status = "not recorded"
        elif _same(value, paper):
            status = "as the paper"
        else:
            status = "**DEVIATION**"
        rows.append((what, paper, value if found else "-", status))
    return rows


# ----------------------------------------------------------------------------- figures

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))


def _as_percent(values):
    """Fractions (train.py's log and evaluate's JSON) as percentages, as the paper gives them."""
    return [None if v is None else 100 * v for v in values]


def plot_curves(log, path):
    """Loss, top-1 and top-5 error per epoch with the learning-rate drops marked; return the drop epochs."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    epochs = [e.get("epoch", i) for i, e in enumerate(log)]
    drops = [ep for ep, e in zip(epochs, log) if e.get("lr_dropped")]
    if not any("lr_dropped" in e for e in log):
        drops = [epochs[i - 1] for i in range(1, len(log)) if log[i].get("lr") != log[i - 1].get("lr")]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    panels = (
        ("loss (cross-entropy)", (("train_loss", "train"), ("val_loss", "val")), False),
        ("top-1 error (%)", (("train_top1_error", "train"), ("val_top1_error", "val (centre patch)")), True),
        ("top-5 error (%)", (("train_top5_error", "train"), ("val_top5_error", "val (centre patch)")), True),
    )
    colours = ("tab:blue", "tab:orange")  # train, val: the same colour in every panel
    for ax, (title, series, percent) in zip(axes, panels):
        top = 0.0
        for (key, label), colour in zip(series, colours):
            ys = [e.get(key) for e in log]
            if all(y is None for y in ys):
                continue
            if percent:
                ys = _as_percent(ys)
            top = max([top] + [y for y in ys if y is not None])
            ax.plot(epochs, [np.nan if y is None else y for y in ys], marker="o", ms=3, label=label, color=colour)
        if percent:
            ax.set_ylim(0, min(100.0, top * 1.1) if top > 0 else 1.0)
        for i, d in enumerate(drops):
            ax.axvline(d + 0.5, color="tab:red", ls="--", lw=1, label="lr / 10" if i == 0 else None)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return drops


def colour_specificity(kernels):
    """Mean over kernels of chromatic energy (weights minus their per-pixel RGB mean) / total energy."""
    k = torch.as_tensor(kernels, dtype=torch.float64)
    chroma = k - k.mean(dim=1, keepdim=True)
    total = (k ** 2).sum(dim=(1, 2, 3)).clamp_min(1e-30)
    return float(((chroma ** 2).sum(dim=(1, 2, 3)) / total).mean())


def _mosaic(kernels, cols=8, pad=1):
    """Tile kernels (K x 3 x h x w) into one RGB image, each kernel stretched to [0, 1] on its own."""
    k = kernels.detach().double().cpu()
    n, _, h, w = k.shape
    rows = math.ceil(n / cols)
    out = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, 3))
    for i in range(n):
        x = k[i].permute(1, 2, 0).numpy()
        lo, hi = x.min(), x.max()
        x = (x - lo) / (hi - lo) if hi > lo else np.full_like(x, 0.5)
        r, c = divmod(i, cols)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = x
    return out


def plot_conv1(conv1, path, two_columns=True):
    """Figure 3: conv1's kernels, column 0 (GPU 1) and column 1 (GPU 2) in separate panels; return the measures."""
    plt = _plt()
    halves = (conv1[: conv1.shape[0] // 2], conv1[conv1.shape[0] // 2:]) if two_columns else (conv1,)
    names = ("GPU 1 (column 0)", "GPU 2 (column 1)") if two_columns else ("one column",)
    measures = [colour_specificity(h) for h in halves]
    mosaics = [_mosaic(h, cols=min(8, h.shape[0])) for h in halves]
    scale = 0.62 / (conv1.shape[-1] + 1)  # inches per mosaic pixel: a kernel about 0.6 inch wide
    w = max(m.shape[1] for m in mosaics) * scale
    heights = [m.shape[0] * scale for m in mosaics]
    fig, axes = plt.subplots(len(halves), 1, figsize=(max(w, 4.5), sum(heights) + 0.75 * len(halves)),
                             squeeze=False, gridspec_kw={"height_ratios": heights})
    for ax, h, mos, name, m in zip(axes[:, 0], halves, mosaics, names, measures):
        ax.imshow(mos, interpolation="nearest")
        ax.set_title(f"{name}: {h.shape[0]} kernels, colour specificity {m:.2f}", fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return dict(zip(names, measures))


def fc7_features(model, store, indices, mean_image, batch_size=64, workers=0, progress=True):
    """fc7 vectors (post-ReLU) of the centre patches of store[indices], in eval mode."""
    from paper_repro.evaluate import image_batches
    from paper_repro.views import TenViews

    model.eval()
    device = torch.device(model.devices[0])
    cut = TenViews(mean_image, model.config().get("input_size", 224), views=1)
    feats = []
    with torch.inference_mode(), tqdm(total=len(indices), unit="img", desc=f"fc7 ({store.split})",
                                      disable=not progress, dynamic_ncols=True) as bar:
        for images, _ in image_batches(store, indices, batch_size, workers):
            feats.append(model.fc7_features(cut(images.to(device))).float().cpu())
            bar.update(images.shape[0])
    return torch.cat(feats)


def nearest_neighbours(model, val, train, mean_image, queries=5, pool=5000, k=6, seed=0, workers=0, progress=True):
    """For `queries` val images, the k training images (of `pool` searched) nearest in fc7; Euclidean."""
    q_idx = np.unique(np.linspace(0, len(val) - 1, min(queries, len(val))).round().astype(np.int64))
    rng = np.random.default_rng(seed)
    p_idx = np.sort(rng.choice(len(train), size=min(pool, len(train)), replace=False))
    fq = fc7_features(model, val, q_idx, mean_image, workers=workers, progress=progress)
    fp = fc7_features(model, train, p_idx, mean_image, workers=workers, progress=progress)
    dist = torch.cdist(fq.double(), fp.double())
    order = torch.sort(dist, dim=1, stable=True).indices[:, :k]
    return [
        {"val": int(q), "train": [int(p_idx[j]) for j in row], "dist": [float(dist[i, j]) for j in row]}
        for i, (q, row) in enumerate(zip(q_idx, order.tolist()))
    ], len(p_idx)


def plot_neighbours(neighbours, val, train, path):
    """Figure 4: each query val image beside its nearest training images (green title: same class)."""
    plt = _plt()
    k = max(len(n["train"]) for n in neighbours)
    fig, axes = plt.subplots(len(neighbours), k + 1, figsize=(1.7 * (k + 1), 1.95 * len(neighbours)),
                             squeeze=False)
    for row, n in zip(axes, neighbours):
        img, label = val[n["val"]]
        row[0].imshow(img)
        row[0].set_title(f"val {n['val']}\n{val.classes[label]}", fontsize=8, fontweight="bold")
        for ax, j, d in zip(row[1:], n["train"], n["dist"]):
            timg, tlabel = train[j]
            ax.imshow(timg)
            ax.set_title(f"{train.classes[tlabel]}\nd={d:.3g}", fontsize=7,
                         color="tab:green" if tlabel == label else "tab:red")
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in row[len(n["train"]) + 1:]:
            ax.axis("off")
        for side in ("top", "bottom", "left", "right"):
            row[0].spines[side].set_color("black")
            row[0].spines[side].set_linewidth(2.5)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


# ----------------------------------------------------------------------------- report

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
        t1, t5 = _as_percent([last.get("val_top1_error"), last.get("val_top5_error")])
        measured.append({
            "source": dataset_identity(run_data, num_classes), "split": "val", "nets": 1, "views": 1,
            "top1": t1, "top5": t5, "checkpoints": f"training log, epoch {last.get('epoch', len(log) - 1)}",
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


def _results_section(evals, log, data, num_classes):
    md = ["## 1. Results beside the paper", "",
          "Errors in %. The paper's numbers are 10-view (four corners, centre and their reflections, softmax "
          "averaged); a measured cell appears only where a measurement on the same data set, split and kind "
          "of model (1 net vs an ensemble) exists. `views` says how each measurement was made.", ""]
    md += results_table(evals, log, data, num_classes)
    if num_classes is not None and num_classes <= 5:
        md += ["", f"With {num_classes} classes the top-5 error is 0 by construction (every label is among the "
                   "5 best)."]
    return md + [""]


def _config_section(config):
    rows = deviations(config)
    dev = [r for r in rows if r[3] == "**DEVIATION**"]
    md = ["## 2. Configuration and deviations from the paper's recipe", "",
          f"{len(dev)} deviation{'s' if len(dev) != 1 else ''} from the paper's recipe"
          + (": " + "; ".join(f"{r[0]} {_md_value(r[2])} (paper {_md_value(r[1])})" for r in dev) + "." if dev
             else "."),
          "", "| setting | paper | this run | |", "|---|---|---|---|"]
    md += [f"| {w} | {_md_value(p)} | {_md_value(v) if v != '-' else '-'} | {s} |" for w, p, v, s in rows]
    md += ["", "<details><summary>config.json (resolved)</summary>", "", "```json",
           json.dumps(config, indent=2, sort_keys=True), "```", "</details>", ""]
    return md


def _curves_section(log, out):
    md = ["## 3. Training curves", ""]
    if not log:
        return md + ["No log.jsonl in the run: no curves.", ""]
    drops = plot_curves(log, os.path.join(out, "curves.png"))
    return md + ["![training curves](curves.png)", "",
                 f"{len(log)} epoch{'s' if len(log) != 1 else ''} logged; learning rate "
                 f"{log[0].get('lr'):g} -> {log[-1].get('lr'):g}; drops after epoch"
                 f"{'s' if len(drops) != 1 else ''}: {', '.join(map(str, drops)) or 'none'} (dashed red lines). "
                 "Validation errors during training are centre-patch (1 view) errors.", ""]


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
        a, b = measures.values()
        md += ["", f"Here column 0 is {'less' if a < b else 'more'} colour-specific than column 1 "
                   f"({a:.3f} vs {b:.3f})."]
    return md + [""]


def _neighbours_section(ckpt_path, data, out, devices, queries, pool, workers, progress):
    from paper_repro.data import ImageNetStore, load_stats
    from paper_repro.evaluate import load_model

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
    plot_neighbours(neigh, val, train, os.path.join(out, "neighbours.png"))
    same = sum(train.labels[j] == val.labels[n["val"]] for n in neigh for j in n["train"])
    total = sum(len(n["train"]) for n in neigh)
    return md + ["![fc7 nearest neighbours](neighbours.png)", "",
                 f"Left column: {len(neigh)} validation images (evenly spaced through the split). The other "
                 "columns: the training images whose fc7 vectors (4096 x width post-ReLU activations of the "
                 "centre patch, eval mode) are nearest in Euclidean distance, nearest first; green title = same "
                 "class as the query, red = another class. Searched: "
                 + (f"all {searched} training images." if searched == len(train) else
                    f"{searched} of the {len(train)} training images (a fixed random sample, seed 0; "
                    "`--pool` sets the number), not the whole set as in the paper.")
                 + f" {same} of {total} neighbours share the query's class.", ""]


def write_report(run, out, evals=(), data=None, devices=("cpu",), queries=5, pool=5000, workers=0, progress=True):
    """Write OUT/report.md and its figures for RUN (and the --eval JSONs); return the report's path."""
    config, log = read_run(run)
    data = data or config.get("data")
    os.makedirs(out, exist_ok=True)
    ckpt_path = os.path.join(run, "checkpoint.pt")
    ckpt = load_checkpoint(ckpt_path) if os.path.isfile(ckpt_path) else None
    model_config = config.get("model_config") or (ckpt or {}).get("model_config") or {}
    ident = dataset_identity(data, model_config.get("num_classes"))
    num_classes = _store_classes(data) or model_config.get("num_classes")
    md = [f"# AlexNet reproduction report: `{run}`", "",
          f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} by "
          "`python -m paper_repro.report`. Paper: Krizhevsky, Sutskever & Hinton, NIPS 2012.", "",
          f"Data: `{data}`: **{ident['name']}**."]
    if not ident["imagenet"]:
        md.append("It is not identified as ImageNet, so none of the numbers below can be compared with the "
                  "paper's; the paper's rows are shown for reference only and their measured cells stay empty.")
    md.append("")
    md += _results_section(evals, log, data, num_classes)
    md += _config_section(config)
    md += _curves_section(log, out)
    md += _conv1_section(ckpt, ckpt_path, model_config, out)
    md += _neighbours_section(ckpt_path, data, out, devices, queries, pool, workers, progress)
    if evals:
        md += ["## Evaluation files", ""] + [f"- `{e.get('_path')}`: {e['split']}, {e.get('views')} views, "
                                             f"{len(e.get('checkpoints', []))} net(s), {e.get('images')} images, "
                                             f"{_fmt(e.get('images_per_s'))} images/s" for e in evals] + [""]
    path = os.path.join(out, "report.md")
    atomic_write(path, lambda f: f.write("\n".join(md)), mode="w")
    return path


def _store_classes(root):
    """Number of classes in STORE's manifest, or None."""
    classes = (_read_json(os.path.join(root, "manifest.json")) if root else {}).get("classes")
    return len(classes) if classes else None


def get_args_parser(add_help=True):
    """The command-line options of python -m paper_repro.report."""
    p = argparse.ArgumentParser(prog="python -m paper_repro.report",
                                description="Write DIR/report.md (+ PNG figures) for a training run: results "
                                "beside the paper's, deviations from its recipe, curves, Figures 3 and 4.",
                                add_help=add_help)
    p.add_argument("--run", required=True, help="RUN folder written by python -m paper_repro.train")
    p.add_argument("--eval", action="append", default=[], help="OUT.json from python -m paper_repro.evaluate "
                   "(repeatable)")
    p.add_argument("--data", default=None, help="STORE (default: the run's config.json 'data')")
    p.add_argument("--out", required=True, help="folder for report.md and its figures")
    p.add_argument("--gpus", default=None, help="devices for Figure 4's features (default: 0 if CUDA, else cpu)")
    p.add_argument("--queries", type=int, default=5, help="validation images in Figure 4 (default 5)")
    p.add_argument("--pool", type=int, default=5000,
                   help="training images searched for Figure 4's neighbours (default 5000; the paper searched all)")
    p.add_argument("--workers", type=int, default=0, help="decoding worker processes for Figure 4")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    return p


def main(args):
    """Write the report; return its path."""
    from paper_repro.devices import parse_gpus

    spec = args.gpus or ("0" if torch.cuda.is_available() else "cpu")
    evals = []
    for p in args.eval:
        with open(p) as f:
            e = json.load(f)
        missing = [k for k in ("top1_error", "top5_error", "split", "views", "checkpoints") if k not in e]
        if missing:
            raise ValueError(f"--eval {p}: not a python -m paper_repro.evaluate result (no {', '.join(missing)})")
        e["_path"] = p
        evals.append(e)
    path = write_report(args.run, args.out, evals, args.data, parse_gpus(spec), args.queries, args.pool,
                        args.workers, progress=not args.no_progress)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    try:
        main(get_args_parser().parse_args())
    except (ValueError, FileNotFoundError) as e:  # bad input: the message says what to do, no traceback
        raise SystemExit(f"python -m paper_repro.report: error: {e}")
