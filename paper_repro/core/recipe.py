"""The paper's training recipe, written once (Krizhevsky et al., NIPS 2012, sections 3-5).

Everything else reads it: the training flags take their defaults from PAPER, the configs in
configs/ hold only what differs from it, AlexNet's constructor defaults are its net part, and the
report lists as a deviation every key of a run whose value differs from PAPER. Where the paper's
text and the authors' code differ, PAPER holds the code's choice and the flag offers the text's
(see the README's table of choices).
"""

# key (a training flag's dest) -> (value, what it is, where the paper says so)
RECIPE = {
    # net (section 3)
    "width": (1.0, "net width multiplier", "section 3: 48 + 48 conv1 kernels"),
    "variant": ("two-column", "architecture variant", "figure 2"),
    "input_size": (224, "input patch size", "section 4.1; conv1 padded to 55 as the authors' code"),
    "lrn": ("code", "local response normalisation", "section 3.3, alpha/n as the authors' code"),
    "pooling": ("overlapping", "max-pooling", "section 3.4: 3x3 windows, stride 2"),
    "init_std": (0.01, "std of the N(0, std) weight init", "section 5"),
    "bias_init": (1.0, "bias init in conv2, conv4, conv5, fc6, fc7", "section 5"),
    "dropout": (0.5, "dropout in fc6, fc7", "section 4.2"),
    # learning (section 5)
    "batch_size": (128, "batch size", "section 5"),
    "lr": (0.01, "initial learning rate", "section 5"),
    "momentum": (0.9, "momentum", "section 5"),
    "weight_decay": (0.0005, "weight decay", "section 5"),
    "lr_schedule": ("plateau", "learning-rate schedule", "section 5: divide by 10 when val error stops improving"),
    "lr_max_drops": (3, "learning-rate drops (divide by 10), at most", "section 5: three times"),
    "epochs": (90, "epochs (cap)", "section 5: roughly 90 cycles"),
    # augmentation (section 4.1)
    "colour_noise": (True, "PCA colour noise", "section 4.1"),
    "colour_noise_std": (0.1, "colour-noise std of a_i", "section 4.1"),
    "colour_noise_scale": ("sqrt", "colour-noise scale (sqrt of eigenvalues: authors' code)", "section 4.1"),
    # precision (the paper trained in fp32)
    "bf16": (False, "bf16 autocast (paper: fp32)", "fp32 on GTX 580"),
    "channels_last": (False, "channels_last memory layout", "not a numeric change; listed for completeness"),
}

PAPER = {key: value for key, (value, _, _) in RECIPE.items()}
PAPER_CLASSES = 1000  # ILSVRC: a run on another number of classes is not the paper's task


def describe(key):
    """The words the report uses for recipe `key`."""
    return RECIPE[key][1]


def deviations(settings):
    """[(key, paper's value, this run's value)] for every recipe key whose value in `settings` differs."""
    out = []
    for key, paper in PAPER.items():
        if key in settings and not _same(settings[key], paper):
            out.append((key, paper, settings[key]))
    return out


def _same(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(b)))
    return a == b
