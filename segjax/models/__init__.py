"""Segmentation models. ``create(name, **kwargs)`` builds a registered model.

Every model is a Flax linen module whose ``apply(variables, image, train=bool)`` returns a dict with
``"logits"`` ``[B,H,W,num_classes]`` (float32) at input resolution; heads add further entries.
"""
from __future__ import annotations

import flax.linen as nn

from segjax import registry
from segjax.models.common import count_params
from segjax.models.unet import UNet

registry.register("model", "unet")(UNet)


def create(spec, **kwargs) -> nn.Module:
  """Builds the model named by ``spec`` (``"unet"`` or ``"unet(features=32)"``) with ``kwargs``."""
  return registry.lookup("model", spec, **kwargs)()


__all__ = ["create", "count_params", "UNet"]
