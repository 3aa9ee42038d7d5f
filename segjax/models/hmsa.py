"""Hierarchical Multi-scale Attention (Tao, Sapra, Catanzaro 2020) around any segmentation trunk.

The trunk (any registered model returning ``logits`` and ``features``) runs on the image at each
scale with shared weights; an attention head on the trunk's features predicts a per-pixel weight
``a_s`` in (0, 1) for scale ``s``. Scales are combined from the largest down, as in the paper's
``nscale_forward``: with ``P`` the prediction combined so far,

* for ``s >= 1``: ``P <- a_s * L_s + (1 - a_s) * down(P)`` (at scale s's resolution);
* for ``s < 1``:  ``P <- up(a_s * L_s) + (1 - up(a_s)) * P``.

Training uses two scales (default 0.5 and 1.0): ``P = up(a_0.5 * L_0.5) + (1 - up(a_0.5)) * L_1``,
and returns every scale's logits (``scale_logits``) for the per-scale auxiliary losses. Inference
takes any list of scales (e.g. 0.5, 1.0, 2.0). With the single scale 1.0 the output is the trunk's.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax import registry
from segjax.models.common import ConvNormAct, Dtype, resize


class AttentionHead(nn.Module):
  """Two 3x3 conv+BN+ReLU and a 1x1 convolution to one sigmoid weight per pixel."""

  features: int = 256
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = ConvNormAct(self.features, dtype=self.dtype)(x, train)
    x = ConvNormAct(self.features, dtype=self.dtype)(x, train)
    x = nn.Conv(1, (1, 1), dtype=self.dtype)(x)
    return nn.sigmoid(x.astype(jnp.float32))


def scaled_size(size, scale):
  return tuple(max(1, int(round(n * scale))) for n in size)


def combine_scales(per_scale: dict[float, tuple[Any, Any]], size) -> Any:
  """The hierarchical combination of ``{scale: (logits, attention)}`` (each at its scale's
  resolution, ``[B,h,w,C]`` and ``[B,h,w,1]``) → logits at ``size``."""
  pred = None
  for scale in sorted(per_scale, reverse=True):
    logits, attention = per_scale[scale]
    if pred is None:
      pred = logits
    elif scale >= 1.0:
      pred = attention * logits + (1 - attention) * resize(pred, logits.shape[1:3])
    else:
      shape = pred.shape[1:3]
      pred = resize(attention * logits, shape) + (1 - resize(attention, shape)) * pred
  return resize(pred, size)


def scale_weights(attention: dict[str, Any]) -> dict[str, Any]:
  """The weight each scale's logits get in `combine_scales`, per pixel, from the ``attention``
  output (``{"0.5": [B,H,W,1], ...}`` at one resolution): going down from the largest scale, a
  scale takes its attention ``a`` and leaves ``1 - a`` to what the larger scales made, so the
  weights are ``a_s * prod(1 - a_t for smaller t)`` (the smallest scale keeps ``a``; the largest
  scale's own attention is unused) and sum to 1."""
  scales = sorted(attention, key=float)
  weights, rest = {}, 1.0
  for i, scale in enumerate(scales):
    own = attention[scale] if i < len(scales) - 1 else 1.0
    weights[scale] = rest * own
    rest = rest * (1 - own) if i < len(scales) - 1 else rest
  return weights


class HMSA(nn.Module):
  """Hierarchical multi-scale attention around ``trunk``.

  ``apply(variables, image, train=..., scales=None)``; ``scales`` defaults to ``train_scales`` in
  training and to ``eval_scales`` otherwise. Returns ``logits`` (combined, input resolution),
  ``scale_logits`` and ``attention`` (``{"0.5": [B,H,W,C|1], ...}`` at input resolution).
  """

  trunk: nn.Module
  train_scales: Sequence[float] = (0.5, 1.0)
  eval_scales: Sequence[float] = (0.5, 1.0, 2.0)
  attention_features: int = 256
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, image, train: bool = False, scales: Sequence[float] | None = None):
    scales = tuple(scales or (self.train_scales if train else self.eval_scales))
    size = image.shape[1:3]
    head = AttentionHead(self.attention_features, self.dtype, name="attention")
    per_scale, outputs = {}, {}
    for scale in sorted(set(scales), reverse=True):
      x = image if scale == 1.0 else resize(image, scaled_size(size, scale))
      out = self.trunk(x, train=train)
      outputs[scale] = out
      attention = resize(head(out["features"], train), x.shape[1:3])
      per_scale[scale] = (out["logits"], attention)
    if len(scales) == 1:  # the trunk alone
      out = outputs[scales[0]]
      return out | {"logits": resize(out["logits"], size)}
    return {
      "logits": combine_scales(per_scale, size).astype(jnp.float32),
      "scale_logits": {str(s): resize(l, size) for s, (l, _) in per_scale.items()},
      "attention": {str(s): resize(a, size) for s, (_, a) in per_scale.items()},
    }


@registry.register("model", "hmsa")
def _hmsa(
  num_classes: int,
  trunk: str = "deeplabv3plus",
  trunk_kwargs: dict | None = None,
  dtype=jnp.float32,
  **kwargs,
) -> HMSA:
  """HMSA around the registered model ``trunk`` (with ``num_classes`` and ``trunk_kwargs``)."""
  make = registry.lookup(
    "model", trunk, num_classes=num_classes, dtype=dtype, **(trunk_kwargs or {})
  )
  return HMSA(trunk=make(), dtype=dtype, **kwargs)
