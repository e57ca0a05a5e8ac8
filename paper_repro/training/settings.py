"""A training run's settings: flags < --config file < RUN/config.json (resume) < flags given, checked once.

get_args_parser() defines the flags (defaults: paper_repro.core.recipe.PAPER); parse_args() resolves the
flags and the config file; resolve_run() reads the run folder (on rank 0 only under torchrun: the
others follow its answer) and decides whether this is a new run or a resumed one.
"""
import argparse
import json
import math
import os

from paper_repro.core.cli import USAGE, HelpFormatter, UsageError
from paper_repro.core.devices import help_text as gpus_help
from paper_repro.core.recipe import DEFAULT_RECIPE, PAPER, RECIPE_VALUES, RECIPES, with_legacy
from paper_repro.nets.checkpoint import CHECKPOINT, PREVIOUS, existing_checkpoints
from paper_repro.nets.lrn import KERNELS as LRN_KERNELS

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
RUN_FILES = ("config.json", "log.jsonl", "steps.jsonl", CHECKPOINT, PREVIOUS)
# Flags that may differ when a run is resumed; every other setting is the run's and must stay.
CHANGEABLE_ON_RESUME = {"data", "epochs", "gpus", "workers", "checkpoint_every", "log_every", "stall_steps", "progress",
                        "resume", "auto_resume", "config", "out", "bf16", "channels_last", "tf32", "decode",
                        "keep_freed_memory", "ten_view_every", "minutes", "lrn_kernel"}

LRN_CHOICES = ("code", "paper", "none")  # --lrn: alpha/n (the authors' code), alpha (the paper's text), none (ablation)

EPILOG = """\
Defaults are the recipe --recipe names: released-2012 (the authors' released code and run files,
layers-145.cfg / layer-params-145.cfg) or paper-text (the paper as printed); paper_repro/core/recipe.py
holds both. Every difference between them, and every deviation from both, is a flag of its own; the
report lists the ones a run used.

Many GPUs / machines (torchrun): each process drives its own pair of GPUs (--gpus 0,1 in process
LOCAL_RANK=r means cuda:2r and cuda:2r+1 of the GPUs it sees; a launcher that already gives each
process its own two GPUs through CUDA_VISIBLE_DEVICES gets cuda:0 and cuda:1), holding one full
two-column replica of the net. DistributedDataParallel averages the replicas' gradients after every
backward pass (NCCL on GPUs, gloo on the CPU), DistributedSampler gives each process its own shard of
every epoch's shuffled order, --batch-size is the GLOBAL batch (each of W processes takes
batch-size/W images, so the paper's 128 and its learning rate keep their meaning), rank 0 decides
whether to resume, and only rank 0 writes RUN/. Example, 2 machines x 4 GPUs = 4 replicas:
  torchrun --nnodes 2 --nproc-per-node 2 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
      -m paper_repro.train --data STORE --gpus 0,1 --out RUN --auto-resume
With --max-restarts N and --auto-resume, a worker that dies costs the steps since the last checkpoint.

A run leaves RUN/config.json (resolved settings), RUN/log.jsonl (one line per epoch) and
RUN/checkpoint.pt (atomic, verified, the previous one kept as checkpoint.prev.pt; every
--checkpoint-every steps and at each epoch's end). After a crash or kill, rerun the same command with
--resume. SIGTERM or Ctrl-C: a checkpoint, then exit status 130.
"""


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, as every other error of the command (core/cli.py)."""

    def error(self, message):
        if message.startswith("the following arguments are required: "):
            missing = message.split(": ", 1)[1].split(", ")
            message = (f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required: "
                       f"python -m paper_repro.train --data STORE --out RUN [flags] (--help lists them)")
        self.exit(USAGE, f"paper_repro.train: error: {message}\n")


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _nonnegative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def get_args_parser(add_help=True):
    """The command-line flags (defaults = the paper's recipe, paper_repro/core/recipe.py)."""
    p = _Parser(prog="python -m paper_repro.train", description=__doc__.splitlines()[0],
                                add_help=add_help, epilog=EPILOG, formatter_class=HelpFormatter)
    g = p.add_argument_group("run")
    g.add_argument("--data", metavar="STORE", required=True,
                   help="image store written by data_prep/build_imagenet.py (needs train and val splits; a CIFAR-10 "
                        "store: train and test, with --val-split test); required")
    g.add_argument("--out", metavar="RUN", required=True,
                   help="run folder: config.json, log.jsonl, steps.jsonl, checkpoint.pt; required")
    g.add_argument("--gpus", default=None, help=gpus_help("cpu,cpu"))
    g.add_argument("--config", help="JSON file of settings that differ from the paper (keys = flag names with _), "
                                    "or a name in paper_repro/configs/ such as alexnet_bias01; flags given here "
                                    "override it (default: none, the paper's recipe)")
    g.add_argument("--resume", action="store_true",
                   help="continue RUN from RUN/checkpoint.pt (an error if there is none; default: a new run, and an "
                        "error if RUN has a checkpoint)")
    g.add_argument("--auto-resume", action="store_true", help="continue RUN if it has a checkpoint, else start it")
    g.add_argument("--seed", type=int, default=0, help="seed of the init, the epoch orders, augmentation and dropout")
    g.add_argument("--workers", type=_nonnegative_int, default=None,
                   help="decoding processes per training process (0: decode in the main process; "
                        "default: the CPU cores this process may use, shared among the node's processes)")
    g.add_argument("--decode", choices=("cpu", "gpu"), default="cpu",
                   help="cpu: the workers decode the store's JPEGs; gpu: the workers read bytes and the GPU "
                        "decodes each batch (torchvision.io.decode_jpeg), for machines with few cores per GPU")
    g.add_argument("--checkpoint-every", type=_nonnegative_int, default=1000,
                   help="also checkpoint every this many steps (0: only at epoch ends)")
    g.add_argument("--log-every", type=_positive_int, default=10,
                   help="steps between loss read-backs (NaN check, progress bar)")
    g.add_argument("--stall-steps", type=_nonnegative_int, default=200,
                   help="warn if the training loss is still ln(classes) after this many steps (0: never check); "
                        "a net that learns leaves ln(classes) well before (results/real_photos.md)")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="tqdm progress bars with the epoch's and the run's time left")
    g.add_argument("--ten-view-every", type=_nonnegative_int, default=0, metavar="N",
                   help="after every N-th epoch and the last, also the paper's ten-view test of the validation "
                        "split (python -m paper_repro.evaluate's), logged beside the centre patch's; it costs "
                        "about ten centre validations each time (0: never; evaluate the checkpoint afterwards)")

    g = p.add_argument_group("learning (section 5)")
    g.add_argument("--epochs", type=_positive_int, default=PAPER["epochs"], help="at most this many epochs")
    g.add_argument("--minutes", type=float, default=PAPER["minutes"], metavar="M",
                   help="wall-clock budget of training (this command and any resumed start, each to its last "
                        "checkpoint; a final ten-view test included): after every epoch the run's length becomes the "
                        "epochs the time left holds at the slowest of the last three epochs' pace, at most --epochs, "
                        "and the released schedule's changes are scaled to that length, so that the schedule ends "
                        "within M minutes on a slow host too (0: no budget, --epochs epochs)")
    g.add_argument("--batch-size", type=_positive_int, default=PAPER["batch_size"],
                   help="global batch, over all torchrun processes")
    g.add_argument("--lr", type=float, default=None,
                   help=f"initial learning rate (> 0); default: {PAPER['lr']} x batch-size / {PAPER['batch_size']} "
                        f"(the paper's {PAPER['lr']} at its batch of {PAPER['batch_size']}; the linear scaling rule "
                        f"at other batch sizes)")
    g.add_argument("--momentum", type=float, default=PAPER["momentum"], help="momentum of the velocity, in [0, 1)")
    g.add_argument("--weight-decay", type=float, default=PAPER["weight_decay"],
                   help="weight decay inside the velocity update (>= 0)")
    g.add_argument("--optimizer", choices=("paper-sgd", "adam"), default=PAPER["optimizer"],
                   help="paper-sgd: the paper's update (momentum, weight decay inside the velocity); adam: Adam with "
                        "Keras' defaults (betas 0.9, 0.999, eps 1e-7; --weight-decay as an L2 term, --momentum "
                        "unused), the CIFAR-10 tutorial's optimiser (--config cifar10_tutorial_adam)")
    g.add_argument("--lr-schedule", choices=("released", "released-2010", "plateau", "step"),
                   default=PAPER["lr_schedule"],
                   help="released: the authors' hand-written 2012 schedule (layer-params-145.cfg: /10 after epochs "
                        "25 and 51, conv1 /10 and colour noise off after 67, conv1 frozen after 72, the others /10 "
                        "after 79, 91 epochs), its epochs scaled by --epochs / 91 for another length; "
                        "released-2010: the 2010 run's (23, 51, 68, 72, 78; 93 epochs); plateau: divide by 10 "
                        "when the val top-1 error stops improving, at most --lr-max-drops times, then stop at the "
                        "next plateau (the paper's text); step: divide after the epochs in --lr-drop-epochs")
    g.add_argument("--lr-patience", type=_positive_int, default=3,
                   help="plateau: epochs without improvement before a drop")
    g.add_argument("--lr-threshold", type=float, default=0.001,
                   help="plateau: an improvement must lower the val top-1 error (a fraction) by more than this")
    g.add_argument("--lr-max-drops", type=_nonnegative_int, default=PAPER["lr_max_drops"],
                   help="plateau: drops before the final stop")
    g.add_argument("--lr-drop-epochs", default="30,60,80", help="step: comma-separated epochs after which lr /= 10")
    g.add_argument("--stop-at-train-error", type=float, default=None, metavar="E",
                   help="stop after the first epoch whose training top-1 error (a fraction) is at most E, e.g. 0.25 "
                        "for Figure 1's learning-rate search (default: never)")

    g = p.add_argument_group("the released 2012 code against the paper's text (each difference a flag)")
    g.add_argument("--recipe", choices=RECIPES, default=DEFAULT_RECIPE,
                   help="the defaults of every setting below and above: released-2012 (the authors' code) or "
                        "paper-text (the paper as printed); a --config or a flag given overrides either")
    g.add_argument("--lrn1-input", choices=("pre-relu", "post-relu"), default=PAPER["lrn1_input"],
                   help="what conv1's response normalisation sees: pre-relu (the code: conv1's linear output, the "
                        "ReLU after pool1) or post-relu (the text)")
    g.add_argument("--cnorm2", action=argparse.BooleanOptionalAction, default=PAPER["cnorm2"],
                   help="the code's same-map normalisation after conv2's (size 5, scale 0.001/25, power 0.75, k 1); "
                        "--no-cnorm2: the text, which does not mention it")
    g.add_argument("--init-std-conv3-5", type=float, default=PAPER["init_std_conv3_5"],
                   help="std of conv3-5's N(0, std) init at width 1 (the code: 0.03; the text: 0.01)")
    g.add_argument("--bias-lr-mult", type=float, default=PAPER["bias_lr_mult"],
                   help="biases' learning rate as a multiple of the weights' (the code: 2; the text: 1)")
    g.add_argument("--bias-lr-fixed", action=argparse.BooleanOptionalAction, default=PAPER["bias_lr_fixed"],
                   help="biases keep their initial rate when the schedule lowers the weights' (the code); "
                        "--no-bias-lr-fixed: they follow it (the text)")
    g.add_argument("--bias-decay", action=argparse.BooleanOptionalAction, default=PAPER["bias_decay"],
                   help="weight decay on biases too (the text's rule read literally); the code decays weights only")
    g.add_argument("--dropout-scaling", choices=("test", "inverted"), default=PAPER["dropout_scaling"],
                   help="test: masks in training, outputs x (1 - p) at test (the paper and the code); inverted: "
                        "torch's nn.Dropout, x 1/(1 - p) in training")
    g.add_argument("--colour-noise-rescale", action=argparse.BooleanOptionalAction,
                   default=PAPER["colour_noise_rescale"],
                   help="divide training patches by 1 + 0.1 while colour noise is on (the code); the text does not")
    g.add_argument("--mean-crop", choices=("centre", "position"), default=PAPER["mean_crop"],
                   help="centre: every patch loses the mean image's centre crop (the code); position: the mean "
                        "image at the patch's own place (the text: the mean of each pixel)")
    g.add_argument("--crop-chunk", type=_positive_int, default=PAPER["crop_chunk"],
                   help="images that share one crop offset and flip (the code: 32, to cut a batch's patches "
                        "fast on a 2012 GPU; 1: every image its own, the text)")

    g = p.add_argument_group("net (section 3); the paper's ablations and common fixes")
    g.add_argument("--width", type=float, default=PAPER["width"], help="channel multiplier for quick runs (> 0)")
    g.add_argument("--bias-init", type=float, default=PAPER["bias_init"],
                   help="bias of conv2, conv4, conv5, fc6, fc7 (0.1 fixes runs that stall at ln(classes))")
    g.add_argument("--lrn", choices=LRN_CHOICES, default=PAPER["lrn"],
                   help="code: alpha/n as the authors' code; paper: the paper's formula; none: the ablation")
    g.add_argument("--pooling", choices=("overlapping", "non-overlapping"), default=PAPER["pooling"],
                   help="overlapping 3/2 (the paper) or non-overlapping 2/2 (ablation)")
    g.add_argument("--variant", choices=("two-column", "one-column-half"), default=PAPER["variant"],
                   help="one-column-half: the paper's one-GPU ablation (half the kernels in conv1-conv4)")
    g.add_argument("--dropout", type=float, default=PAPER["dropout"], help="dropout of fc6 and fc7, in [0, 1)")
    g.add_argument("--init-std", type=float, default=PAPER["init_std"],
                   help="std of the N(0, std) init of conv1, conv2 and fc6-fc8 at width 1 (> 0)")
    g.add_argument("--init-width-scaling", choices=("fan-in", "none"), default="fan-in",
                   help="fan-in: at --width w != 1 each layer's std is init-std * sqrt(its fan-in at width 1 / its "
                        "fan-in), so every layer keeps the paper's gain (at width 1: exactly init-std); none: "
                        "init-std everywhere (a narrow net then stays at chance)")
    g.add_argument("--input-size", type=int, choices=(224, 227), default=PAPER["input_size"],
                   help="224: the authors' code (conv1 padded to 55); 227: Caffe's crops")

    g = p.add_argument_group("augmentation (section 4)")
    g.add_argument("--colour-noise-scale", choices=("sqrt", "eigval"), default=PAPER["colour_noise_scale"],
                   help="sqrt: a_i * sqrt(eigenvalue_i) (the authors' code); eigval: a_i * eigenvalue_i (the "
                        "paper's words; about 1,400 grey levels on the 0-255 scale)")
    g.add_argument("--colour-noise-std", type=float, default=PAPER["colour_noise_std"],
                   help="standard deviation of a_i (>= 0)")
    g.add_argument("--no-colour-noise", dest="colour_noise", action="store_false",
                   help="ablation: no PCA colour noise (default: the paper's PCA colour noise is on)")

    add_cifar_arguments(p)

    g = p.add_argument_group("speed (deviations from fp32, off by default)")
    g.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=PAPER["bf16"],
                   help="bfloat16 autocast for forward and loss (may change on resume: --no-bf16)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=PAPER["channels_last"],
                   help="NHWC memory format for activations and weights")
    g.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True,
                   help="on a GPU, TF32 convolutions and matmuls with cuDNN autotuning; --no-tf32: IEEE fp32")
    g.add_argument("--lrn-kernel", choices=LRN_KERNELS, default="torch",
                   help="how the cross-channel LRN runs: torch, one fused autograd op of torch operators "
                        "(any device); triton, two Triton kernels (CUDA only; the same arithmetic in one pass "
                        "over the map each way, not yet timed on a GPU)")
    g.add_argument("--keep-freed-memory", action=argparse.BooleanOptionalAction, default=True,
                   help="on the CPU, glibc's malloc reuses freed memory instead of returning it to the OS "
                        "after every tensor (faster steps, resident size stays at its peak)")
    return p


def add_cifar_arguments(p):
    """The flags of the CIFAR-10 nets (Figure 1, section 3.3, the tutorials' AlexNet): their own group."""
    g = p.add_argument_group("CIFAR-10 nets (--net; README: \"CIFAR-10: the paper's small experiments on a laptop\")")
    g.add_argument("--net", choices=("alexnet", "cifar_conv_local", "cifar_fig1", "cifar_tutorial"), default="alexnet",
                   help="alexnet: the paper's ImageNet net; cifar_conv_local: section 3.3's net (cuda-convnet's "
                        "layers-conv-local-*.cfg); cifar_fig1: Figure 1's four-layer net; cifar_tutorial: AlexNet "
                        "shrunk for 32x32 (one GPU column of it, FC 1024)")
    g.add_argument("--val-split", choices=("val", "test"), default="val",
                   help="the store split validated after every epoch (a CIFAR-10 store has train and test only; "
                        "its configs use a fixed --lr-schedule step, so the test split chooses nothing)")
    g.add_argument("--cifar-layers", choices=("13pct", "11pct", "13pct-rnorm"), default="13pct",
                   help="cifar_conv_local: cuda-convnet's 13pct net (no normalisation), its 11pct net (two cross-map "
                        "normalisation layers, local3 64 wide, fc10 wc 0.01), or the 13pct net plus the two "
                        "normalisation layers alone")
    g.add_argument("--fig1-arch", choices=("80sec", "conv-local"), default="80sec",
                   help="cifar_fig1: cuda-convnet's layers-80sec.cfg, or the 13pct net's layers (both on whole "
                        "32x32 images, wc 0)")
    g.add_argument("--activation", choices=("relu", "tanh"), default="relu",
                   help="the CIFAR nets' unit where cuda-convnet's files say relu (tanh: Figure 1's other curve)")
    g.add_argument("--tanh-a", type=float, default=1.0, help="tanh unit a * tanh(b x): a (cuda-convnet's tanh[a,b])")
    g.add_argument("--tanh-b", type=float, default=1.0, help="tanh unit a * tanh(b x): b")
    g.add_argument("--cifar-input", choices=("convnet-crops", "whole", "paper"), default=None,
                   help="the data path: convnet-crops (cuda-convnet's cropped provider: 24x24 random crops and flips, "
                        "the centre mean, ten-view test), whole (the whole image minus the mean image), paper (the "
                        "paper's recipe: random patches, flips, PCA colour noise, ten views); default: the net's own "
                        "(conv_local convnet-crops, fig1 whole, tutorial paper)")
    g.add_argument("--cifar-input-size", type=int, default=None,
                   help="the net's input side (default: the net's own: conv_local 24, fig1 32, tutorial 28)")
    g.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=False,
                   help="cifar_tutorial: BatchNorm after every conv and hidden FC layer (the tutorial's net; it "
                        "replaces the response normalisation)")


def _read_config_file(name, allowed):
    path = name if os.path.isfile(name) else os.path.join(CONFIG_DIR, name + ("" if name.endswith(".json") else ".json"))
    if not os.path.isfile(path):
        have = ", ".join(sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".json")))
        raise UsageError(f"--config {name}: no such file, nor a config named so in {CONFIG_DIR} (have: {have})")
    try:
        with open(path) as f:
            values = json.load(f)
    except ValueError as e:
        raise UsageError(f"--config {path}: not valid JSON ({e})") from None
    values = {k.replace("-", "_"): v for k, v in values.items() if not k.startswith("_")}
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise UsageError(f"--config {path}: unknown key(s) {', '.join(unknown)}; keys are flag names with _ "
                         f"(e.g. batch_size), one of: {', '.join(sorted(allowed))}")
    return {key: _checked_value(path, allowed[key], value) for key, value in values.items()}


def _checked_value(path, action, value):
    """`value` from a config file, put through the flag's own type and choices (as if given on the command line)."""
    try:
        if action.type is not None and value is not None and not isinstance(value, bool):
            value = action.type(str(value)) if action.type is not float else float(value)
    except (TypeError, ValueError, argparse.ArgumentTypeError) as e:
        raise UsageError(f"--config {path}: {action.dest} {value!r}: {e}") from None
    if action.choices is not None and value not in action.choices:
        raise UsageError(f"--config {path}: {action.dest} {value!r}: must be one of "
                         f"{', '.join(map(str, action.choices))}")
    return value


def _explicit(argv):
    """The flags given on the command line, as {dest: value}."""
    silent = get_args_parser()
    for a in silent._actions:
        a.default = argparse.SUPPRESS
    return vars(silent.parse_args(argv))


def parse_args(argv=None):
    """Resolve flag defaults < --config file < flags given; check every value. The run folder is read later."""
    parser = get_args_parser()
    given = parser.parse_args(argv)
    explicit = _explicit(argv)
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    values = {dest: a.default for dest, a in actions.items()}
    from_config = _read_config_file(given.config, actions) if given.config else {}
    # The recipe picks the defaults; a config's values and the flags given override them.
    recipe = explicit.get("recipe", from_config.get("recipe", DEFAULT_RECIPE))
    # (--lr keeps its own default, None: the recipe's rate scaled to the batch by default_lr.)
    values.update({k: v for k, v in RECIPE_VALUES[recipe].items() if k in values and k != "lr"})
    values.update(from_config)
    values.update(explicit)
    args = argparse.Namespace(**values)
    args.explicit = sorted(explicit)
    if args.lr is None:
        args.lr = default_lr(args.batch_size)
    if not args.out:
        raise UsageError("--out RUN is required (the run folder)")
    if not args.data:
        raise UsageError("--data STORE is required (an image store from data_prep/build_imagenet.py)")
    check_values(args)
    return args


def default_lr(batch_size):
    """The paper's learning rate at its batch of 128, scaled linearly with the batch (Goyal et al., 2017)."""
    return PAPER["lr"] * batch_size / PAPER["batch_size"] if isinstance(batch_size, int) else PAPER["lr"]


def drop_epochs(text):
    """The epochs of --lr-drop-epochs as a list of ints."""
    try:
        epochs = [int(e) for e in str(text).split(",") if e.strip()]
    except ValueError:
        epochs = None
    if epochs is None or any(e < 1 for e in epochs):
        raise UsageError(f"--lr-drop-epochs {text!r}: expected comma-separated epochs >= 1, such as 30,60,80")
    return epochs


def check_values(args):
    """Raise UsageError naming the flag and its allowed values for the first value out of range."""
    def finite(x):
        return isinstance(x, (int, float)) and math.isfinite(x)

    rules = (
        ("lr", finite(args.lr) and args.lr > 0, "a number > 0 (the paper: 0.01)"),
        ("momentum", finite(args.momentum) and 0 <= args.momentum < 1, "a number in [0, 1) (the paper: 0.9)"),
        ("weight_decay", finite(args.weight_decay) and args.weight_decay >= 0, "a number >= 0 (the paper: 0.0005)"),
        ("width", finite(args.width) and args.width > 0, "a number > 0 (1.0: the paper)"),
        ("init_std", finite(args.init_std) and args.init_std > 0, "a number > 0 (the paper: 0.01)"),
        ("init_std_conv3_5", finite(args.init_std_conv3_5) and args.init_std_conv3_5 > 0,
         "a number > 0 (the code: 0.03, the text: 0.01)"),
        ("bias_lr_mult", finite(args.bias_lr_mult) and args.bias_lr_mult >= 0, "a number >= 0 (the code: 2)"),
        ("bias_init", finite(args.bias_init), "a finite number (the paper: 1)"),
        ("dropout", finite(args.dropout) and 0 <= args.dropout < 1, "a number in [0, 1) (the paper: 0.5)"),
        ("colour_noise_std", finite(args.colour_noise_std) and args.colour_noise_std >= 0,
         "a number >= 0 (the paper: 0.1)"),
        ("lr_threshold", finite(args.lr_threshold) and args.lr_threshold >= 0, "a number >= 0"),
        ("batch_size", isinstance(args.batch_size, int) and args.batch_size >= 1, "an integer >= 1"),
        ("epochs", isinstance(args.epochs, int) and args.epochs >= 1, "an integer >= 1"),
        ("minutes", finite(args.minutes) and args.minutes >= 0, "a number of minutes >= 0 (0: no budget)"),
        ("stop_at_train_error", args.stop_at_train_error is None or (finite(args.stop_at_train_error)
                                                                      and 0 < args.stop_at_train_error < 1),
         "a fraction in (0, 1), such as 0.25"),
    )
    for key, ok, allowed in rules:
        if not ok:
            raise UsageError(f"--{key.replace('_', '-')} {getattr(args, key)}: must be {allowed}")
    if args.lr_schedule == "step":
        drop_epochs(args.lr_drop_epochs)


def check_world(args, world_size):
    """Raise UsageError if the global batch does not split over the processes."""
    if args.batch_size % world_size:
        raise UsageError(f"--batch-size {args.batch_size}: must be a multiple of the {world_size} processes "
                         f"(the global batch is split evenly)")


def resolve_run(args):
    """Read the run folder: return (args with a resumed run's saved settings, resume: bool).

    Under torchrun only rank 0 calls this; the others receive its answer (train.main broadcasts it).
    """
    run = args.out
    if os.path.exists(run) and not os.path.isdir(run):
        raise UsageError(f"--out {run}: exists and is not a folder; choose a folder path for the run")
    found = existing_checkpoints(run)
    if args.resume and not found:
        raise UsageError(f"--resume: {os.path.join(run, CHECKPOINT)} does not exist, so there is nothing to "
                         f"continue; run without --resume to start this run (or --auto-resume to do either)")
    resume = bool(found) and (args.resume or args.auto_resume)
    if found and not resume:
        raise UsageError(f"{found[0]} exists: pass --resume to continue that run, or choose another --out")
    if not resume:
        # A folder whose log holds finished epochs belongs to another run; config.json and steps.jsonl
        # alone are a start that died before its first checkpoint, and are written anew.
        log = os.path.join(run, "log.jsonl")
        leftovers = [f for f in RUN_FILES if os.path.exists(os.path.join(run, f))]
        if os.path.isfile(log) and os.path.getsize(log) > 0:
            raise UsageError(f"--out {run} already holds {', '.join(leftovers)} but no checkpoint to continue "
                             f"from: a new run would mix its epochs with an old run's; choose another --out "
                             f"or delete those files")
        return args, False
    config_path = os.path.join(run, "config.json")
    try:
        with open(config_path) as f:
            saved = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"--resume: {config_path} cannot be read ({e}); the run's settings are unknown") from None
    values = vars(args)
    for k in args.explicit:
        if k not in CHANGEABLE_ON_RESUME and k in saved and saved[k] != values[k]:
            raise UsageError(f"--{k.replace('_', '-')} {values[k]} differs from this run's {saved[k]} "
                             f"({config_path}); a resumed run keeps its settings: drop the flag, or start a new --out")
    merged = dict(values)
    # A run started before a setting existed continues as it started: what the setting meant then.
    saved = with_legacy(saved)
    merged.update({k: v for k, v in saved.items() if k in values and k not in ("resume", "auto_resume", "explicit")})
    merged.update({k: values[k] for k in args.explicit})
    return argparse.Namespace(**merged), True
