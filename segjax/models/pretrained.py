"""Pretrained weights from torchvision (ResNet backbones, DeepLabV3) and Hugging Face transformers
(SegFormer, Mask2Former).

segjax's ResNet and DeepLabV3 carry torchvision's module names, so a state dict maps onto the
variables by name: a Flax path ``("layer1", "0", "conv1", "kernel")`` is the key
``layer1.0.conv1.weight`` (``convs_0`` stands for ``convs.0``); a stage's repeated blocks, stacked
by `nn.scan` under ``blocks/block`` (segjax/models/backbones.py), are the keys ``layer3.1``,
``layer3.2``, ... stacked in order; convolution kernels are transposed from OIHW to HWIO; BatchNorm's ``weight``/``bias``/``running_mean``/``running_var`` become
``scale``/``bias`` and the ``batch_stats`` ``mean``/``var``. Every tensor is checked by name and
shape; anything missing or left over is an error naming the keys.

Files: ``.safetensors`` (the safetensors package) and ``.npz`` are read without PyTorch;
``.pth``/``.pt`` need torch. Wherever a file is taken, a Hugging Face Hub name
``"hf-hub:owner/repo[@revision]"`` is too (`segjax.models.hub`), and `from_pretrained` needs the
name alone.
"""

from __future__ import annotations

import os
import re
from typing import Mapping, NamedTuple

import flax
import numpy as np

# Keys a torchvision file holds that segjax's models do not use.
ALWAYS_IGNORED = ("num_batches_tracked",)
# Flax leaf → PyTorch tensor name, for every key map (torchvision here, transformers in
# segformer_weights.py and mask2former_weights.py).
LEAVES = {
  ("params", "kernel"): "weight",
  ("params", "scale"): "weight",
  ("params", "bias"): "bias",
  ("params", "embedding"): "weight",
  ("batch_stats", "mean"): "running_mean",
  ("batch_stats", "var"): "running_var",
}


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A state dict as numpy arrays from ``.safetensors``, ``.npz`` or (with torch) ``.pth``/``.pt``."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"weights file {path} does not exist")
  extension = os.path.splitext(path)[1].lower()
  if extension == ".npz":
    with np.load(path) as data:
      return {k: data[k] for k in data.files}
  if extension == ".safetensors":
    return _read_safetensors(path)
  if extension in (".pth", ".pt", ".bin"):
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError(
        f"reading {path} needs PyTorch (pip install torch), which segjax does not "
        "depend on; or convert it to .safetensors / .npz first."
      ) from e
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    return {k: v.detach().cpu().numpy() for k, v in state.items()}
  raise ValueError(f"{path}: unknown weights format {extension!r} (.safetensors, .npz, .pth)")


def _read_safetensors(path):
  from safetensors import SafetensorError  # pylint: disable=import-outside-toplevel
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel

  try:
    return load_file(path)
  except (SafetensorError, ValueError) as e:
    raise ValueError(f"{path} is not a readable safetensors file ({e})") from e


def torch_key(path: tuple[str, ...]) -> str:
  """The torchvision key of a Flax variable path ``(collection, *modules, leaf)``."""
  collection, *modules, leaf = path
  if (collection, leaf) not in LEAVES:
    raise KeyError(f"no torchvision name for variable {'/'.join(path)}")
  names = [re.sub(r"_(\d+)$", r".\1", m) for m in modules]
  return ".".join(names + [LEAVES[(collection, leaf)]])


def _unstacked_paths(path: tuple[str, ...], shape) -> list[tuple[str, ...]]:
  """The per-block paths of a leaf stacked by `nn.scan` (``.../blocks/block/...`` with leading
  axis n stands for blocks ``1`` … ``n``), or ``[path]``."""
  if "blocks" not in path:
    return [path]
  i = path.index("blocks")
  return [path[:i] + (str(n),) + path[i + 2 :] for n in range(1, shape[0] + 1)]


def to_state_dict(variables: Mapping, *, key=torch_key) -> dict[str, np.ndarray]:
  """The inverse of `load_state_dict`: the PyTorch keys (``key(path)``: torchvision's names by
  default) and layouts (OIHW convolutions, ``[out, in]`` Linear weights, one tensor per block) of
  ``variables``."""
  out = {}
  for path, value in flax.traverse_util.flatten_dict(flax.core.unfreeze(variables)).items():
    value = np.asarray(value)
    stacked = "blocks" in path
    for n, unstacked in enumerate(_unstacked_paths(path, value.shape)):
      tensor = value[n] if stacked else value
      out[key(unstacked)] = _to_torch_layout(tensor) if path[-1] == "kernel" else tensor
  return out


def _to_flax_layout(tensor: np.ndarray) -> np.ndarray:
  """A PyTorch weight in Flax's layout: OIHW convolutions to HWIO, ``[out, in]`` Linear to
  ``[in, out]``."""
  return (
    tensor.transpose(2, 3, 1, 0) if tensor.ndim == 4 else tensor.T if tensor.ndim == 2 else tensor
  )


def _to_torch_layout(tensor: np.ndarray) -> np.ndarray:
  """The inverse of `_to_flax_layout`."""
  return (
    tensor.transpose(3, 2, 0, 1) if tensor.ndim == 4 else tensor.T if tensor.ndim == 2 else tensor
  )


def load_state_dict(
  variables: Mapping,
  state_dict: Mapping[str, np.ndarray],
  *,
  prefix: str = "",
  ignore: tuple[str, ...] = (),
  key=torch_key,
) -> dict:
  """``variables`` (``{"params": ..., "batch_stats": ...}``) with every leaf replaced by the
  tensor of its PyTorch key (``prefix`` + ``key(path)``: torchvision's names by default) from
  ``state_dict``.

  Raises ``ValueError`` listing missing keys, shape mismatches, and keys of ``state_dict`` under
  ``prefix`` left unused (unless they contain one of ``ignore``).
  """
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
  out, missing, wrong, used = {}, [], [], set()
  for path, value in flat.items():
    keys = [prefix + key(p) for p in _unstacked_paths(path, value.shape)]
    absent = [k for k in keys if k not in state_dict]
    if absent:
      missing.extend(absent)
      continue
    tensors = [np.asarray(state_dict[k]) for k in keys]
    if path[-1] == "kernel":
      tensors = [_to_flax_layout(t) for t in tensors]
    tensor = np.stack(tensors) if len(keys) > 1 or "blocks" in path else tensors[0]
    used.update(keys)
    if tuple(tensor.shape) != tuple(value.shape):
      wrong.append(f"{keys[0]}: file {tuple(tensor.shape)} vs model {tuple(value.shape)}")
      continue
    out[path] = tensor.astype(value.dtype)
  skip = ALWAYS_IGNORED + tuple(ignore)
  left = sorted(
    k
    for k in state_dict
    if k.startswith(prefix) and k not in used and not any(s in k for s in skip)
  )
  problems = []
  if missing:
    problems.append(
      f"{len(missing)} missing: {', '.join(missing[:8])}{' ...' * (len(missing) > 8)}"
    )
  if wrong:
    problems.append(f"{len(wrong)} of another shape: {'; '.join(wrong[:8])}")
  if left:
    problems.append(f"{len(left)} left over: {', '.join(left[:8])}{' ...' * (len(left) > 8)}")
  if problems:
    raise ValueError("the weights do not fit the model — " + " | ".join(problems))
  return flax.traverse_util.unflatten_dict(out)


def from_torchvision(name: str, weights, **kwargs):
  """``(model, variables)`` for torchvision's ``resnet18``..``resnet101`` (the trunk, without
  ``fc``) or ``deeplabv3_resnet50/101`` (output stride 8; the aux head when the weights have it),
  from a file path, a hub name (``"hf-hub:timm/resnet50.tv_in1k"``) or a state dict of arrays.
  ``kwargs`` go to `segjax.models.create`."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from segjax import models  # pylint: disable=import-outside-toplevel

  state, _, _ = read_source(weights)
  ignore: tuple[str, ...] = ()
  if name in ("resnet18", "resnet34", "resnet50", "resnet101"):
    model = models.create(name, **kwargs)
    ignore = ("fc.",)
  elif name in ("deeplabv3_resnet50", "deeplabv3_resnet101"):
    if "classifier.4.weight" not in state:
      raise ValueError(
        f"{name}: the weights have no classifier.4.weight (not a torchvision DeepLabV3 state dict?)"
      )
    kwargs.setdefault("num_classes", int(state["classifier.4.weight"].shape[0]))
    kwargs.setdefault("aux_head", any(k.startswith("aux_classifier.") for k in state))
    kwargs.setdefault("output_stride", 8)
    model = models.create("deeplabv3", backbone=name.split("_")[1], **kwargs)
  else:
    raise ValueError(
      f"no torchvision conversion for {name!r}; known: resnet18, resnet34, "
      "resnet50, resnet101, deeplabv3_resnet50, deeplabv3_resnet101"
    )
  abstract = jax.eval_shape(
    lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)
  )
  variables = load_state_dict(abstract, state, ignore=ignore)
  return model, jax.tree.map(jnp.asarray, variables)


class Weights(NamedTuple):
  """Weights as read: the state dict, the ``config.json`` beside it (``{}`` when none), and for a
  hub name what a run records of them (`segjax.models.hub.HubWeights.record`; else None)."""

  state: dict
  config: dict
  record: dict | None


def read_source(source) -> Weights:
  """The `Weights` given as a state dict, a hub name, a directory holding ``model.safetensors``
  (and ``config.json``), a weights file, or `Weights` already read."""
  import json  # pylint: disable=import-outside-toplevel
  from segjax.models import hub  # pylint: disable=import-outside-toplevel

  if isinstance(source, Weights):
    return source
  if isinstance(source, Mapping):
    return Weights(dict(source), {}, None)
  if hub.is_hub_name(source):
    state, weights = hub.read(source)
    return Weights(state, weights.config, weights.record())
  path, hf_config = os.fspath(source), {}
  if os.path.isdir(path):
    config_path = os.path.join(path, "config.json")
    if os.path.exists(config_path):
      with open(config_path, encoding="utf-8") as f:
        hf_config = json.load(f)
    path = os.path.join(path, "model.safetensors")
  return Weights(read_state_dict(path), hf_config, None)


TRANSFORMERS_NAMES = {
  "segformer": "segformer",
  "SegformerForSemanticSegmentation": "segformer",
  "mask2former": "mask2former",
  "Mask2FormerForUniversalSegmentation": "mask2former",
  "sam": "sam",
  "SamModel": "sam",
  "vit": "vit",
  "Dinov2Model": "vit",
  "Dinov2WithRegistersModel": "vit",
}


def from_transformers(name: str, path, **kwargs):
  """``(model, variables)`` of a Hugging Face transformers checkpoint: ``name`` is the
  architecture (``"segformer"``/``"SegformerForSemanticSegmentation"``, ``"mask2former"``/
  ``"Mask2FormerForUniversalSegmentation"`` with a ResNet backbone, ``"sam"``/``"SamModel"``:
  Segment Anything, `segjax.models.sam`, or ``"Dinov2Model"``/``"Dinov2WithRegistersModel"``:
  DINOv2's ViT, `segjax.models.vit`), ``path`` its ``.safetensors``
  file, a directory holding ``model.safetensors`` (and ``config.json``), a hub name
  (``"hf-hub:nvidia/segformer-b0-finetuned-ade-512-512"``) or a state dict of arrays (the
  checkpoint's key names or transformers 5's in-memory ones). Sizes (widths, depths, layer
  counts, queries, classes) are read from the tensors' shapes, attention heads from ``config.json`` (defaults: MiT's 1, 2, 5, 8; Mask2Former's 8); every tensor
  is mapped by name and checked by shape (`load_state_dict`: missing, misshapen and left over keys
  are listed). ``kwargs`` go to `segjax.models.create` and win over what was read (``dtype``,
  ``num_heads`` for a bare state dict, ...)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from segjax import models  # pylint: disable=import-outside-toplevel
  from segjax.models import mask2former_weights  # pylint: disable=import-outside-toplevel
  from segjax.models import segformer_weights  # pylint: disable=import-outside-toplevel

  if name not in TRANSFORMERS_NAMES:
    raise ValueError(
      f"no transformers conversion for {name!r}; known: {', '.join(TRANSFORMERS_NAMES)}"
    )
  state, hf_config, _ = read_source(path)
  if TRANSFORMERS_NAMES[name] == "sam":
    from segjax.models import sam  # pylint: disable=import-outside-toplevel

    model = models.create("sam", **{**sam.sizes_from_state_dict(state, hf_config), **kwargs})
    return model, sam.load_variables(model, state)
  if TRANSFORMERS_NAMES[name] == "vit":
    from segjax.models import vit  # pylint: disable=import-outside-toplevel

    module, ignore = vit, ()
    state = vit.checkpoint_names(state)
  elif TRANSFORMERS_NAMES[name] == "segformer":
    module, ignore = segformer_weights, ()
    state = segformer_weights.checkpoint_names(state)
  else:
    module, ignore = mask2former_weights, ("criterion.empty_weight",)
    state = mask2former_weights.split_in_proj(state)
  kwargs = {**module.sizes_from_state_dict(state, hf_config), **kwargs}
  model = models.create(TRANSFORMERS_NAMES[name], **kwargs)
  abstract = jax.eval_shape(
    lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)
  )
  variables = load_state_dict(abstract, state, key=module.hf_key, ignore=ignore)
  return model, jax.tree.map(jnp.asarray, variables)


def load_transformers_encoder(variables: Mapping, path, *, subtree: str = "segformer") -> dict:
  """``variables`` with SegFormer's ``segformer`` subtree (the MiT encoder) from a transformers
  checkpoint (``nvidia/mit-b0`` … ``mit-b5``, ``SegformerForImageClassification``, or any
  SegFormer checkpoint; its head is ignored); for ``config.model.pretrained``."""
  from segjax.models import segformer_weights  # pylint: disable=import-outside-toplevel

  state, _, _ = read_source(path)
  state = segformer_weights.checkpoint_names(state)
  variables = flax.core.unfreeze(variables)
  part = {c: v[subtree] for c, v in variables.items() if subtree in v}
  if not part:
    raise ValueError(f"the model has no {subtree!r} to load {path} into")
  loaded = load_state_dict(
    part,
    state,
    prefix=f"{subtree}.",
    key=lambda p: segformer_weights.hf_key((p[0], subtree, *p[1:]))[len(subtree) + 1 :],
  )
  for collection, tree in loaded.items():
    variables[collection][subtree] = tree
  return variables


def load_backbone(variables: Mapping, path, *, subtree: str = "backbone") -> dict:
  """``variables`` with its ``subtree`` (a torchvision ResNet; a ``/`` path for a nested one,
  e.g. Mask2Former's ``model/pixel_level_module/encoder``) loaded from ``path``; for
  ``config.model.pretrained``; ``path`` as `read_source` takes it. The file's ``fc`` is
  ignored."""
  variables = flax.core.unfreeze(variables)
  state, _, _ = read_source(path)
  if any(k.startswith("backbone.") for k in state):  # a whole DeepLab file: take its backbone
    state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
  keys = subtree.split("/")

  def get(tree):
    for key in keys:
      if not isinstance(tree, Mapping) or key not in tree:
        return None
      tree = tree[key]
    return tree

  part = {c: get(v) for c, v in variables.items() if get(v) is not None}
  if not part:
    raise ValueError(f"the model has no {subtree!r} to load {path} into")
  loaded = load_state_dict(part, state, ignore=("fc.",))
  for collection, tree in loaded.items():
    parent = variables[collection]
    for key in keys[:-1]:
      parent = parent[key]
    parent[keys[-1]] = tree
  return variables


def from_pretrained(name, **kwargs):
  """``(model, variables)`` of pretrained weights named by a hub name
  (``"hf-hub:nvidia/segformer-b0-finetuned-ade-512-512"``, ``"hf-hub:timm/resnet50.tv_in1k"``,
  ``@revision`` to pin one) or a local directory of ``config.json`` + ``model.safetensors``: the
  architecture is read from ``config.json`` — transformers' ``architectures`` (SegFormer,
  Mask2Former with a ResNet backbone, SAM: `from_transformers`) or timm's ``architecture`` (ResNet-18
  to -101, torchvision's key names: `from_torchvision`). ``kwargs`` go to `segjax.models.create`."""
  weights = read_source(name)
  architectures = weights.config.get("architectures") or []
  timm_name = weights.config.get("architecture")
  if architectures and architectures[0] in TRANSFORMERS_NAMES:
    return from_transformers(architectures[0], weights, **kwargs)
  if timm_name in ("resnet18", "resnet34", "resnet50", "resnet101"):
    return from_torchvision(timm_name, weights, **kwargs)
  found = architectures or timm_name or "no architecture"
  raise ValueError(
    f"{name}: config.json names {found!r}; segjax converts transformers' "
    f"{', '.join(n for n in TRANSFORMERS_NAMES if n[0].isupper())} and timm's "
    "resnet18/34/50/101"
  )


def load_pretrained(variables, path: str, model=None) -> tuple[dict, dict | None]:
  """``variables`` with the model's pretrained part from ``path`` (``config.model.pretrained``: a
  file, or a hub name ``"hf-hub:owner/repo[@revision]"``): a torchvision ResNet (or timm's) into
  its ``backbone`` (or the subtree the model names as ``pretrained_subtree``: Mask2Former's), or,
  for a model whose ``pretrained_format`` is ``"transformers"`` (SegFormer), a transformers
  checkpoint into its encoder; and for a hub name the resolved revision and file hash
  (`segjax.models.hub.HubWeights.record`; else None)."""
  subtree = getattr(model, "pretrained_subtree", "backbone")
  weights = read_source(path)
  if getattr(model, "pretrained_format", "torchvision") == "transformers":
    return load_transformers_encoder(variables, weights, subtree=subtree), weights.record
  return load_backbone(variables, weights, subtree=subtree), weights.record
