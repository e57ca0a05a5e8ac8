"""paper_repro: a faithful two-GPU PyTorch reproduction of Krizhevsky et al., NIPS 2012 (AlexNet)."""
from setuptools import find_packages, setup

setup(
    name="paper_repro",
    version="0.1.0",
    description="Faithful two-column AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) in PyTorch",
    packages=find_packages(include=["paper_repro", "paper_repro.*", "data_prep", "data_prep.*"]),
    package_data={"paper_repro": ["configs/*.json", "data/*.tsv"]},
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "pillow>=9.1",
        "numpy",
        "tqdm",
        "scipy",  # the devkit's meta.mat
        "matplotlib",  # the report's figures
    ],
    extras_require={"test": ["pytest>=7"]},
)
