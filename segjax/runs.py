"""Self-describing runs: what a training run writes besides checkpoints, and loading a trained model
from a run directory or from an exported file, without the training data or the optimizer state.

A run directory (``--workdir``)::

  config.json       the config; functions in it are recorded by importable name ("module:function")
  descriptor.json   the dataset descriptor (classes, colours, thing/stuff, ignore label, label
                    divisor) and the input: channels, normalisation, mean, std, percentiles
  pretrained.json   for a run started from hub weights (config.model.pretrained = "hf-hub:..."):
                    the name, the repository, the commit its revision resolved to, the files and
                    their SHA-256
  checkpoints/      orbax checkpoints, each with a "variables" and a "training" item
  metrics.jsonl, final_metrics.json, tensorboard/

An exported model (``experiments/export.py``, `export`) is one ``.safetensors`` file: every model
variable as a tensor named by its path (``params/down0/ConvNormAct_0/Conv_0/kernel``) and, in the
file's metadata, the config and the descriptor — everything `load` needs to predict.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from segjax import checkpointing
from segjax import files
from segjax import models
from segjax import registry
from segjax.data.descriptor import DatasetDescriptor

CONFIG_FILE = "config.json"
DESCRIPTOR_FILE = "descriptor.json"
PRETRAINED_FILE = "pretrained.json"
EXPORT_FORMAT = "segjax-model-1"
# The data settings that say how an image becomes the model's input (saved with the descriptor).
INPUT_KEYS = ("channels", "normalization", "mean", "std", "percentiles")


# ------------------------------------------------------------------------ config
def config_to_dict(config) -> dict:
  """``config`` as JSON-able data; a function is recorded by its importable name."""

  def convert(value, path):
    if isinstance(value, Mapping):
      return {k: convert(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
      return [convert(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if callable(value):
      name = registry.importable_name(getattr(value, "func", value))
      if name is None or getattr(value, "args", None) or getattr(value, "keywords", None):
        raise ValueError(
          f"{path} holds {value!r}, which config.json cannot record: use a "
          "function defined at the top level of a module (recorded as "
          "'module:function'), or its registered name."
        )
      return name
    return value

  return convert(config.to_dict() if hasattr(config, "to_dict") else dict(config), "config")


def _tuples(value):
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def config_from_dict(data: Mapping) -> ml_collections.ConfigDict:
  """A ConfigDict from `config_to_dict`'s data (JSON lists become tuples)."""
  return ml_collections.ConfigDict(_tuples(dict(data)))


# ------------------------------------------------------------------------ descriptor
def descriptor_to_dict(descriptor: DatasetDescriptor, data_config=None) -> dict:
  out = {field.name: getattr(descriptor, field.name) for field in dataclasses.fields(descriptor)}
  out["num_classes"] = descriptor.num_classes
  if data_config is not None:
    out["input"] = {k: data_config.get(k) for k in INPUT_KEYS if data_config.get(k) is not None}
  return out


def descriptor_from_dict(data: Mapping) -> DatasetDescriptor:
  names = {field.name for field in dataclasses.fields(DatasetDescriptor)}
  values = {k: _tuples(v) for k, v in data.items() if k in names}
  values["colormap"] = tuple(tuple(c) for c in values["colormap"])
  return DatasetDescriptor(**values)


def write(
  workdir: str, config, descriptor: DatasetDescriptor, pretrained: dict | None = None
) -> None:
  """Writes ``config.json``, ``descriptor.json`` and, given ``pretrained`` (what hub weights
  resolved to), ``pretrained.json`` into ``workdir`` (process 0; atomically)."""
  if jax.process_index() != 0:
    return
  files.write_json(os.path.join(workdir, CONFIG_FILE), config_to_dict(config))
  files.write_json(
    os.path.join(workdir, DESCRIPTOR_FILE), descriptor_to_dict(descriptor, config.data)
  )
  if pretrained:
    files.write_json(os.path.join(workdir, PRETRAINED_FILE), pretrained)


def _read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(
      f"{path} does not exist: is {os.path.dirname(path)} a segjax run "
      "directory (experiments/train.py --workdir=...)?"
    ) from None
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}).") from e


def read_config(workdir: str) -> ml_collections.ConfigDict:
  return config_from_dict(_read_json(os.path.join(workdir, CONFIG_FILE)))


def read_descriptor(workdir: str) -> DatasetDescriptor:
  return descriptor_from_dict(_read_json(os.path.join(workdir, DESCRIPTOR_FILE)))


# ------------------------------------------------------------------------ trained models
@dataclasses.dataclass
class Run:
  """A trained model and what it needs to predict: ``config`` (its ``data`` keys say how images
  are normalised; ``predict`` and ``postprocess`` how outputs become predictions), ``descriptor``,
  the ``model`` and its ``variables``."""

  config: ml_collections.ConfigDict
  descriptor: DatasetDescriptor
  model: Any
  variables: dict
  path: str = ""  # the run directory or exported file it was loaded from

  def apply(self, images, **kwargs):
    """The model's outputs in eval mode for a batch ``[B,H,W,C]`` of normalised images."""
    return self.model.apply(self.variables, images, train=False, **kwargs)


def input_shape(config) -> tuple[int, int, int]:
  """``(H, W, C)`` the model is initialised with: the training crop and ``data.channels``."""
  return (*tuple(config.data.crop_size), int(config.data.get("channels", 3)))


def abstract_variables(model, config, sharding=None) -> dict:
  """Shapes and dtypes (with ``sharding``, default this process's first device) of the model's
  variables."""
  image = jnp.zeros((1, *input_shape(config)), jnp.float32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), image, train=False))
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  shapes = {"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {})}
  return jax.tree_util.tree_map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes
  )


# Where the data of a user's config lies (and how its evaluation images are padded); every other
# data key (the dataset, the normalisation, the input size) is the run's.
DATA_LOCATION_KEYS = (
  "root",
  "data_dir",
  "skip_bad",
  "eval_pp",
  "eval_pad_to",
  "eval_size_multiple",
  "eval_pad_mode",
)
RUN_KEYS = ("model", "data")  # what a trained model fixes


def with_run_model(run: Run, config=None) -> ml_collections.ConfigDict:
  """The run's config with everything ``config`` sets but the model and the data
  (``config.evals``, ``inference``, ``postprocess``, ``predict``, the devices, ...), and the data
  location of ``config`` (`DATA_LOCATION_KEYS`), where ``config`` is given."""
  merged = config_to_dict(run.config)
  if config is None:
    return config_from_dict(merged)
  merged.update(
    {
      key: config_to_dict(config[key]) if isinstance(config[key], Mapping) else config[key]
      for key in config
      if key not in RUN_KEYS
    }
  )
  data = config.get("data", {})
  merged["data"].update({key: data[key] for key in DATA_LOCATION_KEYS if key in data})
  return config_from_dict(merged)


def check_same_classes(trained: DatasetDescriptor, data: DatasetDescriptor) -> None:
  """Raises when evaluation data has other classes than the run was trained on."""
  if tuple(trained.class_names) != tuple(data.class_names):
    raise ValueError(
      f"The evaluation data ({data.name}) has the classes {list(data.class_names)}, "
      f"but the model was trained on {list(trained.class_names)}."
    )


def load(path: str, step: int | None = None) -> Run:
  """The trained model of a run directory (its latest checkpoint, or ``step``) or of an exported
  ``.safetensors`` file: config, descriptor, model and variables — no optimizer state, no data."""
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.isfile(path):
    return load_exported(path)
  config, descriptor = read_config(path), read_descriptor(path)
  model = models.from_config(config.model, descriptor.num_classes)
  checkpointer = checkpointing.Checkpointer(os.path.join(path, "checkpoints"), asynchronous=False)
  try:
    variables = checkpointer.restore_variables(abstract_variables(model, config), step)
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(
      f"The checkpoint in {checkpointer.directory} does not fit the model of "
      f"{os.path.join(path, CONFIG_FILE)}. Orbax said: {e}"
    ) from e
  finally:
    checkpointer.close()
  return Run(config, descriptor, model, variables, path=path)


def export(run: Run, path: str) -> str:
  """Writes ``run``'s variables, config and descriptor as one ``.safetensors`` file (atomically)."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel

  flat = flax.traverse_util.flatten_dict(jax.device_get(run.variables), sep="/")
  metadata = {
    "format": EXPORT_FORMAT,
    "config": json.dumps(config_to_dict(run.config)),
    "descriptor": json.dumps(descriptor_to_dict(run.descriptor, run.config.data)),
  }
  return files.write_atomic(
    path,
    lambda tmp: save_file(
      {k: np.ascontiguousarray(v) for k, v in flat.items()}, tmp, metadata=metadata
    ),
  )


def load_exported(path: str) -> Run:
  """A `Run` from a file written by `export`; every tensor checked against the model's shapes."""
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel

  try:
    with safe_open(path, framework="numpy") as f:
      metadata = f.metadata() or {}
      tensors = {k: f.get_tensor(k) for k in f.keys()}
  except Exception as e:  # safetensors raises its own error types for a bad header
    raise ValueError(
      f"{path} is not a segjax model file (.safetensors from experiments/export.py): {e}"
    ) from e
  if metadata.get("format") != EXPORT_FORMAT:
    raise ValueError(
      f"{path} is a safetensors file but not a segjax model export (its metadata "
      f"has format {metadata.get('format')!r}, not {EXPORT_FORMAT!r})."
    )
  config = config_from_dict(json.loads(metadata["config"]))
  descriptor = descriptor_from_dict(json.loads(metadata["descriptor"]))
  model = models.from_config(config.model, descriptor.num_classes)
  expected = flax.traverse_util.flatten_dict(abstract_variables(model, config), sep="/")
  missing = sorted(set(expected) - set(tensors))
  extra = sorted(set(tensors) - set(expected))
  wrong = [
    f"{k}: file {tensors[k].shape} vs model {expected[k].shape}"
    for k in expected
    if k in tensors and tuple(tensors[k].shape) != tuple(expected[k].shape)
  ]
  if missing or extra or wrong:
    raise ValueError(
      f"{path} does not fit its own config's model: missing {missing[:5]}, "
      f"left over {extra[:5]}, other shapes {wrong[:5]}."
    )
  variables = flax.traverse_util.unflatten_dict(
    {tuple(k.split("/")): jnp.asarray(v, expected[k].dtype) for k, v in tensors.items()}
  )
  variables.setdefault("batch_stats", {})
  return Run(config, descriptor, model, variables, path=path)
