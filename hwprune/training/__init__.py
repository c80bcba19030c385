"""The training loop shared by the PruningNet and pruned networks: config, loop, distillation, devices."""
from .config import TrainConfig, lr_at

__all__ = ["TrainConfig", "lr_at"]
