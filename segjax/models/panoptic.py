"""Panoptic-DeepLab (Cheng et al. 2020): semantic, instance-centre and centre-offset heads on a
segmentation trunk.

The trunk is any registered model returning ``logits`` and ``features`` (DeepLabV3+ or UNet). With
``dual_decoder`` the instance branch runs on a second trunk of its own (the paper's separate
instance decoder; here the backbone is not shared), else on the semantic trunk's features. The
model returns raw heads; grouping them into panoptic ids is the ``panoptic_deeplab``
post-processor (`segjax.postprocess`), whose thresholds live in ``config.postprocess``.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from segjax.models.common import ConvNormAct, Dtype, resize


class Head(nn.Module):
  features: int
  out: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = ConvNormAct(self.features, kernel_size=5, dtype=self.dtype)(x, train)
    return nn.Conv(self.out, (1, 1), dtype=self.dtype)(x).astype(jnp.float32)


class PanopticDeepLab(nn.Module):
  """Panoptic-DeepLab heads on ``trunk`` (and ``instance_trunk`` with a dual decoder).

  Returns ``logits`` (semantic), ``features``, ``center`` ``[B,H,W]`` (the instance-centre
  heatmap) and ``offset`` ``[B,H,W,2]`` ((dy, dx) from each pixel to its centre, in pixels), all at
  input resolution.
  """
  trunk: nn.Module
  instance_trunk: nn.Module | None = None
  head_features: int = 32
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, image, train: bool = False):
    size = image.shape[1:3]
    out = self.trunk(image, train=train)
    features = out["features"]
    if self.instance_trunk is not None:
      features = self.instance_trunk(image, train=train)["features"]
    center = Head(self.head_features, 1, self.dtype, name="center_head")(features, train)
    offset = Head(self.head_features, 2, self.dtype, name="offset_head")(features, train)
    return {"logits": out["logits"], "features": out["features"],
            "center": resize(center, size)[..., 0], "offset": resize(offset, size)}
