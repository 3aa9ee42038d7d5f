"""Segmentation models. ``create(name, **kwargs)`` builds a registered model.

Every model is a Flax linen module whose ``apply(variables, image, train=bool)`` returns a dict with
``"logits"`` ``[B,H,W,num_classes]`` (float32) at input resolution for any H, W, and ``"features"``
(the map its classifier reads); heads add further entries (``"aux_logits"``, ``"attention"``, ...).
Every model takes a computation ``dtype`` (e.g. ``bfloat16``) and keeps float32 parameters.

| name            | module                         |
|-----------------|--------------------------------|
| ``unet``        | `segjax.models.unet.UNet`      |
| ``segnet``      | `segjax.models.segnet.SegNet`  |
| ``deeplabv3``   | `segjax.models.deeplab.DeepLabV3` |
| ``deeplabv3plus`` | `segjax.models.deeplab.DeepLabV3Plus` |
| ``segformer``   | `segjax.models.segformer.SegFormer` (MiT-B0..B5 encoder, all-MLP decoder) |
| ``mask2former`` | `segjax.models.mask2former.Mask2Former` (ResNet trunk, deformable-attention pixel decoder, masked-attention decoder; class + mask per query) |
| ``hmsa``        | `segjax.models.hmsa.HMSA` around any of the others (``trunk=...``) |
| ``panoptic_deeplab`` | `segjax.models.panoptic.PanopticDeepLabResNet` (shared ResNet, dual decoder) or `PanopticDeepLab` heads on any ``trunk`` |
| ``resnet18``..``resnet101`` | `segjax.models.backbones.ResNet` backbones (features by stride) |
"""

from __future__ import annotations

import importlib
import pkgutil

import flax.linen as nn
import jax.numpy as jnp

from segjax import registry
from segjax.models.common import count_params

from segjax.models.backbones import ResNet  # noqa: E402
from segjax.models.deeplab import DeepLabV3, DeepLabV3Plus  # noqa: E402
from segjax.models.hmsa import HMSA  # noqa: E402
from segjax.models.mask2former import Mask2Former  # noqa: E402
from segjax.models.panoptic import PanopticDeepLab, PanopticDeepLabResNet  # noqa: E402
from segjax.models.segformer import SegFormer  # noqa: E402
from segjax.models.segnet import SegNet  # noqa: E402
from segjax.models.unet import UNet  # noqa: E402


def create(spec, **kwargs) -> nn.Module:
  """Builds the model named by ``spec`` (``"unet"`` or ``"unet(features=32)"``) with ``kwargs``."""
  return registry.lookup("model", spec, **kwargs)()


# config.model keys that configure the run rather than the module.
RUN_KEYS = ("name", "dtype", "pretrained")


def from_config(model_config, num_classes: int) -> nn.Module:
  """The model named by ``config.model.name`` with the other ``config.model`` keys as arguments
  (``dtype`` as a name: ``"bfloat16"``; ``pretrained`` is read by the trainer)."""
  model_config = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
  kwargs = {k: v for k, v in model_config.items() if k not in RUN_KEYS}
  dtype = jnp.dtype(model_config.get("dtype", "float32"))
  try:
    return create(model_config["name"], num_classes=num_classes, dtype=dtype, **kwargs)
  except TypeError as e:
    raise ValueError(
      f"config.model = {model_config} does not fit model {model_config['name']!r}: {e}"
    ) from e


# Every module of this package is imported (after `create`, which some of them use), so the models
# they register need no list here.
for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f"{__name__}.{_module.name}")

from segjax.models.pretrained import from_pretrained, from_torchvision, from_transformers  # noqa: E402,E501

__all__ = [
  "create",
  "count_params",
  "from_config",
  "from_pretrained",
  "from_torchvision",
  "from_transformers",
  "DeepLabV3",
  "DeepLabV3Plus",
  "HMSA",
  "Mask2Former",
  "PanopticDeepLab",
  "PanopticDeepLabResNet",
  "ResNet",
  "SegFormer",
  "SegNet",
  "UNet",
]
