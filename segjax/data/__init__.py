"""Datasets (tfds builders with a descriptor each) and the tf.data input pipeline.

segjax.data.folder_dataset(root, "train")   # a folder of images and masks, as stored
segjax.data.get_source(config.data)         # any configured dataset (shapes, folder, tfds:...)
segjax.data.train_dataset(...), segjax.data.eval_dataset(...)
"""

import importlib as _importlib

from segjax.data.descriptor import DatasetDescriptor

# Imported on first use (they import TensorFlow).
_LAZY = {
  "folder_dataset": "folder",
  "get_source": "datasets",
  "dataset_info": "datasets",
  "train_dataset": "pipeline",
  "eval_dataset": "pipeline",
  "as_numpy": "pipeline",
}
_SUBMODULES = (
  "builders",
  "catalogue",
  "datasets",
  "folder",
  "microscopy",
  "ops",
  "patches",
  "pipeline",
  "preparing",
  "shapes",
  "targets",
)

__all__ = ["DatasetDescriptor", *_LAZY]


def __getattr__(name):
  if name in _LAZY:
    return getattr(_importlib.import_module(f"segjax.data.{_LAZY[name]}"), name)
  if name in _SUBMODULES:
    return _importlib.import_module(f"segjax.data.{name}")
  raise AttributeError(f"module 'segjax.data' has no attribute {name!r}")
