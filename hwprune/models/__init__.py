"""The model zoo: ImageNet and CIFAR-size CNNs, built by name with ``create_model``."""
from . import mobilenet, resnet, resnet_cifar  # noqa: F401  (registers the variants)
from .loading import ModelLoadError, load_model, load_weights, rebuild_model
from .registry import create_model, list_models, model_input_shape, register_model

__all__ = ["create_model", "list_models", "model_input_shape", "register_model", "load_model", "load_weights",
           "rebuild_model", "ModelLoadError"]
