"""segjax: image segmentation in JAX/Flax (semantic, instance, panoptic).

``import segjax`` is light: the subpackages (``segjax.data``, ``segjax.models``, ``segjax.losses``,
...) are imported on first use, so ``segjax.data.folder_dataset(...)`` works after ``import
segjax`` alone.
"""

import importlib as _importlib

from segjax import xla_cpu as _xla_cpu

__version__ = "0.1.0"

# Before JAX starts a backend: CPU convolutions on XLA's Eigen kernels (see segjax/xla_cpu.py).
_xla_cpu.prefer_eigen_convolutions()

_SUBMODULES = (
  "checkpointing",
  "cutout",
  "config_defaults",
  "data",
  "distributed",
  "evaluation",
  "evaluators",
  "geo",
  "inference",
  "interactive",
  "labelstudio",
  "losses",
  "metrics",
  "models",
  "optim",
  "plan",
  "postprocess",
  "pictures",
  "predict",
  "predict_files",
  "prelabels",
  "registry",
  "runs",
  "sharding",
  "train",
  "train_state",
  "visualize",
)


def __getattr__(name):
  if name in _SUBMODULES:
    return _importlib.import_module(f"segjax.{name}")
  raise AttributeError(f"module 'segjax' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_SUBMODULES))
