"""Datasets and loaders: a bundled real default, ImageFolder, CIFAR and MNIST idx files; nothing downloads."""
from .datasets import DataError, ImageData, bundled_mnist, load_dataset
from .loaders import Loaders, SeededSampler, make_loaders

__all__ = ["DataError", "ImageData", "load_dataset", "bundled_mnist", "make_loaders", "SeededSampler", "Loaders"]
