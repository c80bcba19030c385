"""The PruningNet (MetaPruning's weight-generating meta network), its training and candidate evaluation."""
from .evaluate import evaluate_candidate, recalibrate_bn
from .pruningnet import PruningNet, generator_params
from .train import load_pruningnet, train_pruningnet

__all__ = ["PruningNet", "generator_params", "train_pruningnet", "load_pruningnet", "evaluate_candidate",
           "recalibrate_bn"]
