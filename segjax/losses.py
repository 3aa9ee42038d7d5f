"""Segmentation losses as pure functions, and their combination from a config.

Contract: ``fn(logits, labels, *, ignore_label=255, **hparams) -> scalar float32``. ``logits`` are
channels-last ``[B,H,W,C]`` (any float dtype; computed in float32), ``labels`` integer ``[B,H,W]``.
Pixels equal to ``ignore_label`` never contribute, neither to the sums nor to the normaliser; every
loss is finite when a class is absent or when every pixel is ignored (it is then 0).

A new loss is one plain function with that signature; ``@register_loss`` makes it available by name
in configs (``config.loss = "my_loss + 0.5 * dice_loss(smooth=1.0)"``), and a function object can
stand wherever a name does.
"""
from __future__ import annotations

import ast
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from segjax import registry


def register_loss(fn=None, *, name: str | None = None):
  """Decorator registering a loss function by name for use in ``config.loss``."""
  if fn is None:
    return lambda f: register_loss(f, name=name)
  return registry.register("loss", name)(fn)


def _valid_mask(labels, ignore_label):
  return labels != ignore_label


def _safe_divide(num, den):
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1), 0.0)


@register_loss
def cross_entropy(logits, labels, *, ignore_label: int = 255, class_weights=None,
                  label_smoothing: float = 0.0, top_k_percent: float = 1.0):
  """Softmax cross-entropy averaged over the non-ignored pixels.

  ``loss = sum_i w_{y_i} l_i / sum_i w_{y_i}`` with ``l_i = -sum_c q_ic log p_ic`` and the smoothed
  target ``q = (1 - s) onehot(y) + s / C`` (``w`` = ``class_weights`` or 1). This equals PyTorch's
  ``F.cross_entropy(..., weight=class_weights, ignore_index=ignore_label, label_smoothing=s)`` with
  ``reduction="mean"`` for ``top_k_percent=1``. With ``top_k_percent < 1`` only the hardest
  ``ceil(top_k_percent * H * W)`` pixels of each image are kept (bootstrapped CE of Panoptic-DeepLab,
  normalised by the number of valid pixels among them, as deeplab2 does); class weights then scale
  the per-pixel losses and the normaliser is the kept valid count.
  Absent classes need no convention; all pixels ignored gives 0.
  """
  logits = logits.astype(jnp.float32)
  num_classes = logits.shape[-1]
  valid = _valid_mask(labels, ignore_label)
  safe_labels = jnp.where(valid, labels, 0)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  onehot = jax.nn.one_hot(safe_labels, num_classes, dtype=jnp.float32)
  weights = jnp.ones((num_classes,), jnp.float32) if class_weights is None else jnp.asarray(
      class_weights, jnp.float32)
  if weights.shape != (num_classes,):
    raise ValueError(f"class_weights has shape {weights.shape}; expected ({num_classes},).")
  nll = -jnp.sum(onehot * log_probs, axis=-1) * weights[safe_labels]
  smooth_term = -jnp.sum(log_probs * weights, axis=-1) / num_classes
  per_pixel = (1.0 - label_smoothing) * nll + label_smoothing * smooth_term
  pixel_weight = jnp.where(valid, weights[safe_labels], 0.0)
  per_pixel = jnp.where(valid, per_pixel, 0.0)
  if top_k_percent >= 1.0:
    return _safe_divide(jnp.sum(per_pixel), jnp.sum(pixel_weight))
  if not 0.0 < top_k_percent:
    raise ValueError(f"top_k_percent must be in (0, 1]; got {top_k_percent}.")
  batch = per_pixel.shape[0]
  flat = per_pixel.reshape(batch, -1)
  k = max(1, math.ceil(top_k_percent * flat.shape[1]))
  # Ignored pixels get -1 so that they are picked only when fewer than k pixels are valid.
  ranked = jnp.where(valid.reshape(batch, -1), flat, -1.0)
  top, _ = jax.lax.top_k(ranked, k)
  kept = top >= 0
  return _safe_divide(jnp.sum(jnp.where(kept, top, 0.0)), jnp.sum(kept))


def _probabilities_and_targets(logits, labels, mode: str, ignore_label: int):
  """Soft predictions ``p``, one-hot/binary targets ``t`` and valid mask, all ``[B, N, C]``."""
  logits = logits.astype(jnp.float32)
  batch = logits.shape[0]
  if mode == "multiclass":
    num_classes = logits.shape[-1]
    valid = _valid_mask(labels, ignore_label)
    probs = jax.nn.softmax(logits, axis=-1)
    targets = jax.nn.one_hot(jnp.where(valid, labels, 0), num_classes, dtype=jnp.float32)
    valid = jnp.broadcast_to(valid[..., None], probs.shape)
  elif mode in ("binary", "multilabel"):
    if mode == "binary" and logits.ndim == labels.ndim:
      logits = logits[..., None]
    if labels.ndim < logits.ndim:
      labels = labels[..., None]
    valid = jnp.broadcast_to(_valid_mask(labels, ignore_label), logits.shape)
    probs = jax.nn.sigmoid(logits)
    targets = jnp.where(valid, labels, 0).astype(jnp.float32)
  else:
    raise ValueError(f"Unknown mode {mode!r}; expected 'multiclass', 'binary' or 'multilabel'.")
  num_classes = probs.shape[-1]
  reshape = lambda x: x.reshape(batch, -1, num_classes)
  return reshape(probs), reshape(targets), reshape(valid).astype(jnp.float32)


def soft_confusion(logits, labels, *, mode="multiclass", ignore_label=255, per_image=False):
  """Soft true positives, false positives, false negatives per class: ``[C]`` or ``[B, C]``.

  ``TP_c = sum p_c t_c``, ``FP_c = sum p_c (1 - t_c)``, ``FN_c = sum (1 - p_c) t_c`` over the
  non-ignored pixels of the batch (or of each image when ``per_image``). Also returns the number
  of ground-truth pixels per class, which tells which classes are present.
  """
  probs, targets, valid = _probabilities_and_targets(logits, labels, mode, ignore_label)
  axes = (1,) if per_image else (0, 1)
  tp = jnp.sum(probs * targets * valid, axis=axes)
  fp = jnp.sum(probs * (1 - targets) * valid, axis=axes)
  fn = jnp.sum((1 - probs) * targets * valid, axis=axes)
  support = jnp.sum(targets * valid, axis=axes)
  return tp, fp, fn, support


def _mean_over_present(per_class_loss, support):
  present = support > 0
  return _safe_divide(jnp.sum(jnp.where(present, per_class_loss, 0.0)), jnp.sum(present))


@register_loss
def tversky_loss(logits, labels, *, mode: str = "multiclass", alpha: float = 0.5, beta: float = 0.5,
                 smooth: float = 0.0, eps: float = 1e-7, ignore_label: int = 255,
                 per_image: bool = False):
  """``1 - TI_c`` averaged over the classes present in the ground truth.

  ``TI_c = (TP_c + smooth) / max(TP_c + alpha FP_c + beta FN_c + smooth, eps)`` with soft counts
  from softmax (``"multiclass"``) or sigmoid (``"binary"``, ``"multilabel"``) probabilities, summed
  over the whole batch (or per image when ``per_image``, then averaged over images). ``alpha``
  weights false positives, ``beta`` false negatives. Equals segmentation_models_pytorch's
  ``TverskyLoss`` when every class is present; smp also averages over absent classes (counting them
  as 0), segjax leaves them out of the mean, so the loss does not shrink as classes go missing.
  """
  tp, fp, fn, support = soft_confusion(logits, labels, mode=mode, ignore_label=ignore_label,
                                       per_image=per_image)
  index = (tp + smooth) / jnp.maximum(tp + alpha * fp + beta * fn + smooth, eps)
  return _mean_over_present(1.0 - index, support)


@register_loss
def dice_loss(logits, labels, *, mode: str = "multiclass", smooth: float = 0.0, eps: float = 1e-7,
              ignore_label: int = 255, per_image: bool = False):
  """``1 - Dice_c`` averaged over present classes, ``Dice = (2TP + s) / max(2TP + FP + FN + s, eps)``.

  The Tversky loss with ``alpha = beta = 0.5``; equals segmentation_models_pytorch's ``DiceLoss``
  when every class is present (see ``tversky_loss`` for the absent-class convention).
  """
  return tversky_loss(logits, labels, mode=mode, alpha=0.5, beta=0.5, smooth=smooth / 2, eps=eps / 2,
                      ignore_label=ignore_label, per_image=per_image)


@register_loss
def jaccard_loss(logits, labels, *, mode: str = "multiclass", smooth: float = 0.0, eps: float = 1e-7,
                 ignore_label: int = 255, per_image: bool = False):
  """``1 - IoU_c`` averaged over present classes, ``IoU = (TP + s) / max(TP + FP + FN + s, eps)``.

  The Tversky loss with ``alpha = beta = 1``; equals segmentation_models_pytorch's ``JaccardLoss``
  when every class is present.
  """
  return tversky_loss(logits, labels, mode=mode, alpha=1.0, beta=1.0, smooth=smooth, eps=eps,
                      ignore_label=ignore_label, per_image=per_image)


# ----------------------------------------------------------------------------------------------
# Combination from config.
# ----------------------------------------------------------------------------------------------
LossTerm = tuple[Any, float, dict]


def parse_loss(spec) -> list[LossTerm]:
  """Parses ``config.loss`` into ``[(name_or_fn, weight, kwargs), ...]``.

  Accepts an expression string (``"cross_entropy + 0.5 * dice_loss(smooth=1.0)"``), a single
  function, or a sequence of ``(name_or_fn, weight[, kwargs])``.
  """
  if callable(spec):
    return [(spec, 1.0, {})]
  if isinstance(spec, str):
    return [_parse_term(node, spec) for node in _split_sum(ast.parse(spec.strip(), mode="eval").body, spec)]
  terms = []
  for item in spec:
    item = tuple(item)
    if len(item) not in (2, 3):
      raise ValueError(f"Loss term {item!r} must be (name_or_fn, weight) or (name_or_fn, weight, kwargs).")
    name, weight, kwargs = (*item, {}) if len(item) == 2 else item
    terms.append((name, float(weight), dict(kwargs)))
  return terms


def _split_sum(node, spec):
  if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
    return _split_sum(node.left, spec) + _split_sum(node.right, spec)
  return [node]


def _parse_term(node, spec) -> LossTerm:
  weight = 1.0
  if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
    left, right = node.left, node.right
    if isinstance(right, ast.Constant):
      left, right = right, left
    if not isinstance(left, ast.Constant) or not isinstance(left.value, (int, float)):
      raise ValueError(f"In loss {spec!r}: a term must be 'weight * name(...)'; got {ast.unparse(node)!r}.")
    weight, node = float(left.value), right
  name, kwargs = registry.parse_spec(ast.unparse(node))
  return name, weight, kwargs


def make_loss(spec, *, ignore_label: int = 255) -> Callable[..., tuple[jax.Array, dict]]:
  """Returns ``loss_fn(logits, labels) -> (total, {term_name: value})`` for ``config.loss``.

  Unknown names fail here, at construction, with the list of registered losses.
  """
  terms = []
  for name, weight, kwargs in parse_loss(spec):
    fn = registry.lookup("loss", name, **kwargs)
    label = name if isinstance(name, str) else getattr(name, "__name__", "loss")
    terms.append((label, weight, fn))

  def loss_fn(logits, labels):
    values = {}
    total = jnp.zeros((), jnp.float32)
    for label, weight, fn in terms:
      value = jnp.asarray(fn(logits, labels, ignore_label=ignore_label), jnp.float32)
      key, n = label, 1
      while key in values:  # the same loss twice with other arguments
        n += 1
        key = f"{label}_{n}"
      values[key] = value
      total = total + weight * value
    return total, values

  return loss_fn


def loss_names() -> Sequence[str]:
  return registry.names("loss")
