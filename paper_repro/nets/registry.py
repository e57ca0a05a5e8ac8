"""Which class a saved net's config names: the paper's AlexNet or one of the CIFAR-10 nets (config["net"])."""
from paper_repro.nets.alexnet import AlexNet
from paper_repro.nets.cifar import ConvLocalNet, Fig1Net
from paper_repro.nets.cifar_tutorial import TutorialAlexNet

NETS = {"alexnet": AlexNet, ConvLocalNet.net_name: ConvLocalNet, Fig1Net.net_name: Fig1Net,
        TutorialAlexNet.net_name: TutorialAlexNet}


def net_from_config(config, devices):
    """The net a model_config describes (AlexNet's has no "net" key), built on `devices`, freshly initialised."""
    name = config.get("net", "alexnet")
    if name not in NETS:
        raise ValueError(f"the checkpoint's net {name!r} is not one of {', '.join(NETS)}")
    kwargs = {k: v for k, v in config.items() if k != "net"}
    return NETS[name](devices=tuple(devices), **kwargs)
