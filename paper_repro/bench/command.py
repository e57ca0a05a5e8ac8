"""The bench command line: one sub-command per stage, each printing one JSON object."""
import argparse
import os

import torch

from paper_repro.bench.evaluation import bench_eval
from paper_repro.bench.loader import bench_loader
from paper_repro.bench.local import bench_local
from paper_repro.bench.lrn import bench_lrn
from paper_repro.bench.train_step import bench_train
from paper_repro.core.atomic import print_json
from paper_repro.core.recipe import DEFAULT_RECIPE, RECIPES
from paper_repro.training.settings import LRN_CHOICES, LRN_KERNELS

PROG = "python -m paper_repro.bench"
DESCRIPTION = """python -m paper_repro.bench {train,loader,eval,lrn,local}: our speed beside a user's baseline.

Each stage runs ours and the baseline in one process, on the same device, data and precision,
and prints one JSON object (images_per_s of each, the figures behind them, the speed-up).
`train` runs the training command's own code: its flags' defaults, build_model, PaperSGD,
TrainPatch, set_precision_policy, keep_freed_memory and engine.train_step, for our net and for torchvision's AlexNet.
The image-prep benchmark is `python data_prep/bench_prep.py`.
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written, and every flag's default after its help."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default:" in text or action.default in (None, argparse.SUPPRESS):
            return text
        if isinstance(action, argparse._StoreTrueAction):
            return text + " (default: off)"
        return text + " (default: %(default)s)"


def _pipeline_flags(p, data_help, gpus_help):
    """The flags the loader and eval stages share: the store, the device, the workers, the batch, the outputs."""
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--gpus", default="cpu", help=gpus_help)
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="decoding processes of each pipeline")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch")
    p.add_argument("--tmp", default=None, help="where the baseline's ImageFolder copy is written (default: the "
                                               "system's temporary folder)")
    p.add_argument("--json", help="also write the JSON here (default: print only)")


def get_args_parser():
    """The bench command line: one sub-command per stage."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, formatter_class=_Formatter)
    sub = parser.add_subparsers(dest="stage", required=True, metavar="{train,loader,eval,lrn,local}")

    p = sub.add_parser("train", formatter_class=_Formatter, help="a training step (augment, forward, loss, backward, "
                       "PaperSGD) by the training code: ours vs torchvision.models.alexnet",
                       description="engine.train_step of our net (built by paper_repro.train with these flags,\n"
                                   "the rest the paper's recipe) and of torchvision's AlexNet, in alternating\n"
                                   "rounds on one fixed uint8 batch with fresh augmentation draws every step.")
    p.add_argument("--gpus", default="cpu", help="device spec as for train: cpu, cpu,cpu, 0, 0,0, 0,1")
    p.add_argument("--batch-size", type=int, default=128, help="images per step (the paper's 128)")
    p.add_argument("--steps", type=int, default=10, help="timed steps of each net per round")
    p.add_argument("--repeats", type=int, default=3, help="rounds (each net's steps in turn); median and best reported")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps of each net, in alternation, before the first round")
    p.add_argument("--width", type=float, default=1.0, help="our net's width (torchvision's is always 1)")
    p.add_argument("--recipe", choices=RECIPES, default=DEFAULT_RECIPE, help="our net's recipe, as train --recipe")
    p.add_argument("--lrn", choices=LRN_CHOICES, default=None,
                   help="as train --lrn (none: our net without its response normalisation; default: the recipe's)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for both nets, as train --bf16")
    p.add_argument("--channels-last", action="store_true", help="channels_last for both nets, as train --channels-last")
    p.add_argument("--lrn-kernel", choices=LRN_KERNELS, default="torch",
                   help="our net's LRN, as train --lrn-kernel (triton: CUDA only)")
    p.add_argument("--no-tf32", dest="tf32", action="store_false", help="as train --no-tf32: plain fp32 convolutions and matmuls on a GPU "
                                                                  "(default: TF32 on a GPU)")
    p.add_argument("--no-keep-freed-memory", dest="keep_freed_memory", action="store_false",
                   help="as train --no-keep-freed-memory: glibc's malloc returns freed memory to the OS "
                        "(default: kept for reuse on the CPU, for both nets)")
    p.add_argument("--peak-size", type=int, default=2048,
                   help="n of the n x n x n torch.mm timed before and after the rounds, same threads and precision: "
                        "the measured matmul peak each net's FLOP rate is reported against (0: not measured)")
    p.add_argument("--profile", type=int, default=0, metavar="STEPS",
                   help="after the rounds, profile STEPS more steps of each net (torch.profiler) and add its "
                        "operators by self time, device time on a GPU, and its autograd nodes and our fused ops "
                        "by total time to the JSON (default: 0, no profile)")
    p.add_argument("--json", help="also write the JSON here (default: print only)")
    p.set_defaults(func=bench_train)

    p = sub.add_parser("loader", formatter_class=_Formatter,
                       help="training input pipeline on a JPEG and a raw store: ours vs ImageFolder + RandomCrop "
                            "+ flip",
                       description="Our BatchLoader + TrainPatch on each store given (a raw store also with its\n"
                                   "batches gathered in --workers processes) and ImageFolder + RandomCrop + flip +\n"
                                   "ToTensor over the same JPEGs with the same workers, in alternating rounds;\n"
                                   "then each stage's ms per image, one thread: where the time goes.")
    _pipeline_flags(p, "STORE from data_prep/build_imagenet.py (its train split), either format",
                    "where the batches go (augmentation runs there for ours)")
    p.add_argument("--compare", metavar="STORE", action="append", default=[],
                   help="another store of the same images in the other format (build_imagenet.py --format), "
                        "measured in the same run against the same baseline")
    p.add_argument("--seconds", type=float, default=10.0, help="timed seconds for each pipeline in each round")
    p.add_argument("--rounds", type=int, default=3, help="rounds (each pipeline in turn); the median is reported")
    p.add_argument("--warmup", type=int, default=3, help="batches before the clock starts")
    p.add_argument("--parts-images", type=int, default=512,
                   help="images the per-stage breakdown times (0: no breakdown)")
    p.add_argument("--no-keep-freed-memory", dest="keep_freed_memory", action="store_false",
                   help="as train --no-keep-freed-memory: glibc's malloc returns freed memory to the OS "
                        "(default: kept for reuse on the CPU, for every pipeline)")
    p.set_defaults(func=bench_loader)

    p = sub.add_parser("eval", formatter_class=_Formatter,
                       help="ten-view evaluation: ours vs ImageFolder + TenCrop, same net")
    _pipeline_flags(p, "STORE (its val split is evaluated)", "device spec as for evaluate: cpu, 0, 0,1")
    p.add_argument("--width", type=float, default=1.0, help="width of the (untrained) net")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for both")
    p.set_defaults(func=bench_eval)

    p = sub.add_parser("lrn", formatter_class=_Formatter,
                       help="the LRN's forward + backward on one tensor: time, operators, passes over memory",
                       description="paper_repro.nets.lrn.local_response_norm forward + backward on a ReLU-like\n"
                                   "tensor, NCHW and channels_last, fp32 and bf16.")
    p.add_argument("--shape", default="32,96,55,55", help="N,C,H,W (default: conv1's output at batch 32)")
    p.add_argument("--groups", type=int, default=2, help="channel groups (2: the one-device layout's two columns)")
    p.add_argument("--repeats", type=int, default=7, help="timed calls of each variant; min and median reported")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads")
    p.add_argument("--json", help="also write the JSON here (default: print only)")
    p.set_defaults(func=bench_lrn)

    p = sub.add_parser("local", formatter_class=_Formatter,
                       help="CIFAR-10 section 3.3 net: our locally connected layers vs plain torch (unfold), "
                            "the layers alone and the whole training step",
                       description="cuda-convnet's conv-local net (python -m paper_repro.train --config\n"
                                   "cifar10_conv_local) with our LocallyConnected2d and with UnfoldLocal2d\n"
                                   "(F.unfold + einsum), same weights, in alternating rounds on the CPU; the time of\n"
                                   "one epoch of 50,000 images at each rate.")
    p.add_argument("--layers", choices=("13pct", "11pct", "13pct-rnorm"), default="13pct", help="which net")
    p.add_argument("--batch-size", type=int, default=128, help="images per step (cuda-convnet's 128)")
    p.add_argument("--steps", type=int, default=5, help="timed steps of each per round")
    p.add_argument("--repeats", type=int, default=3, help="rounds; median and best reported")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads")
    p.add_argument("--json", help="also write the JSON here (default: print only)")
    p.set_defaults(func=bench_local)
    return parser


def main(args):
    """Run the chosen stage, print its JSON, and write it to --json if given."""
    return print_json(args.func(args), args.json)

