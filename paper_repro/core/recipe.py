"""The two recipes, written once: what the authors' released 2012 code ran, and what the paper prints.

Krizhevsky's own code and run files (github computerhistory/AlexNet-Source-Code: layers-145.cfg,
layer-params-145.cfg, convdata.py, the weight-update code) are the project's default
("released-2012"); the paper's text (NIPS 2012, sections 3-5) is the other ("paper-text"). Where
they agree the value is the same in both. Everything else reads this file: the training flags take
their defaults from the chosen recipe (`--recipe`), configs in configs/ hold only what differs from
it, AlexNet's constructor defaults are the default recipe's net part, and the report lists every
key of a run whose value differs from either recipe.
"""

DEFAULT_RECIPE = "released-2012"
RECIPES = ("released-2012", "paper-text")

# key (a training flag's dest) -> (released-2012 value, paper-text value, what it is, where each says so)
RECIPE = {
    # net (section 3; layers-145.cfg)
    "width": (1.0, 1.0, "net width multiplier", "section 3: 48 + 48 conv1 kernels"),
    "variant": ("two-column", "two-column", "architecture variant", "figure 2"),
    "input_size": (224, 224, "input patch size", "section 4.1; conv1 padded to 55 as the authors' code"),
    "lrn": ("code", "code", "local response normalisation", "section 3.3, alpha/n as the authors' cmrnorm"),
    "lrn1_input": ("pre-relu", "post-relu", "what conv1's response normalisation sees",
                   "layers-145.cfg: rnorm1 on conv1's linear output, ReLU after pool1; section 3.3: after the ReLU"),
    "cnorm2": (True, False, "same-map normalisation after conv2's (cnorm2)",
               "layers-145.cfg: rnorm size 5, scale 0.001, pow 0.75; not in the paper"),
    "pooling": ("overlapping", "overlapping", "max-pooling", "section 3.4: 3x3 windows, stride 2"),
    "init_std": (0.01, 0.01, "std of the N(0, std) weight init (conv1, conv2, fc6-fc8)", "section 5; initW 0.01"),
    "init_std_conv3_5": (0.03, 0.01, "std of the N(0, std) init of conv3, conv4, conv5",
                         "layers-145.cfg: initW 0.03; section 5: 0.01 everywhere"),
    "bias_init": (1.0, 1.0, "bias init in conv2, conv4, conv5, fc6, fc7", "section 5; initB 1"),
    "dropout": (0.5, 0.5, "dropout in fc6, fc7", "section 4.2"),
    "dropout_scaling": ("test", "test", "dropout's scaling (test: outputs x0.5 at test time)",
                        "section 4.2 and the code: masks in training, x0.5 at test (not inverted dropout)"),
    # learning (section 5; layer-params-145.cfg)
    "batch_size": (128, 128, "batch size", "section 5"),
    "lr": (0.01, 0.01, "initial learning rate (weights)", "section 5; epsW 0.01"),
    "bias_lr_mult": (2.0, 1.0, "biases' learning rate / the weights'", "layer-params-145.cfg: epsB 0.02"),
    "bias_lr_fixed": (True, False, "biases' learning rate never lowered",
                      "layer-params-145.cfg ends with epsB 0.02 (conv1's 0 when frozen)"),
    "optimizer": ("paper-sgd", "paper-sgd", "optimiser",
                  "section 5: SGD with momentum, weight decay inside the velocity (the authors' update)"),
    "momentum": (0.9, 0.9, "momentum", "section 5; momW, momB 0.9"),
    "weight_decay": (0.0005, 0.0005, "weight decay", "section 5; wc 0.0005"),
    "bias_decay": (False, True, "weight decay on biases", "the code passes wc 0 for biases; section 5's rule is for w"),
    "lr_schedule": ("released", "plateau", "learning-rate schedule",
                    "layer-params-145.cfg's epochs 25, 51, 67, 72, 79, 91; section 5: /10 on plateaus"),
    "lr_max_drops": (3, 3, "learning-rate drops (divide by 10), at most (plateau)", "section 5: three times"),
    "epochs": (91, 90, "epochs (cap)", "layer-params-145.cfg: killed at 91; section 5: roughly 90 cycles"),
    "minutes": (0.0, 0.0, "wall-clock budget in minutes (the epochs that fit; 0: none)",
                "no budget: both train for their schedule's epochs"),
    # augmentation (section 4.1; convdata.py)
    "colour_noise": (True, True, "PCA colour noise", "section 4.1"),
    "colour_noise_std": (0.1, 0.1, "colour-noise std of a_i", "section 4.1"),
    "colour_noise_scale": ("sqrt", "sqrt", "colour-noise scale (sqrt of eigenvalues: authors' code)", "section 4.1"),
    "colour_noise_rescale": (True, False, "inputs divided by 1.1 while colour noise is on",
                             "convdata.py: / (1 + color_noise_coeff) in training"),
    "mean_crop": ("centre", "position", "which part of the mean image a patch loses",
                  "convdata.py: the mean's centre crop for every patch; section 2: the mean at each pixel"),
    "crop_chunk": (1, 1, "images sharing one crop offset and flip",
                   "convdata.py: chunks of 32 (a throughput device; README)"),
    # precision (the paper trained in fp32)
    "bf16": (False, False, "bf16 autocast (paper: fp32)", "fp32 on GTX 580"),
    "channels_last": (False, False, "channels_last memory layout", "not a numeric change; listed for completeness"),
}

RECIPE_VALUES = {name: {key: entry[i] for key, entry in RECIPE.items()} for i, name in enumerate(RECIPES)}
PAPER = RECIPE_VALUES[DEFAULT_RECIPE]  # the project's default: the authors' code where it and the text differ
PAPER_CLASSES = 1000  # ILSVRC: a run on another number of classes is not the paper's task

# Runs and checkpoints written before the recipe keys existed used the paper's text with torch's
# inverted dropout and one init std everywhere: what a missing key meant then.
LEGACY_RECIPE = "before-released-source"
LEGACY = {**RECIPE_VALUES["paper-text"], "dropout_scaling": "inverted", "init_std_conv3_5": None,
          "recipe": LEGACY_RECIPE}


def with_legacy(settings):
    """`settings` of a run or checkpoint, its missing recipe keys filled with what they meant before they existed."""
    out = dict(settings)
    for key, value in LEGACY.items():
        out.setdefault(key, value)
    if out.get("init_std_conv3_5") is None and "init_std" in out:
        out["init_std_conv3_5"] = out["init_std"]  # one std everywhere, as the net was then
    return out


def describe(key):
    """The words the report uses for recipe `key`."""
    return RECIPE[key][2]


def deviations(settings, recipe=DEFAULT_RECIPE):
    """[(key, the recipe's value, this run's value)] for every recipe key whose value in `settings` differs."""
    out = []
    for key, value in RECIPE_VALUES[recipe].items():
        if key in settings and not _same(settings[key], value):
            out.append((key, value, settings[key]))
    return out


def _same(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(b)))
    return a == b
