"""paper_repro: Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep
Convolutional Neural Networks" (NIPS 2012), reproduced faithfully in PyTorch."""

__version__ = "0.1.0"
