"""Segmentation losses as pure functions of arrays.

Classification losses: ``fn(logits, labels, *, ignore_label=255, **hparams) -> scalar float32``;
``logits`` channels-last ``[B,H,W,C]`` (any float dtype; computed in float32), ``labels`` integer
``[B,H,W]``. Pixels equal to ``ignore_label`` never contribute, neither to the sums nor to the
normaliser; every loss is finite when a class is absent or when every pixel is ignored (it is then 0).

Regression losses (``weighted_mse``, ``weighted_l1``): ``fn(prediction, target, *, pixel_weights=None)``
with float targets of the prediction's shape, averaged over the pixels their weights select.

Batch losses (``@register_loss(takes_batch=True)``) need more than one prediction and one target:
``fn(outputs, batch, *, output_key, target_key, ignore_label, **hparams)`` gets the model's whole
output dict (nested outputs flattened to ``"scale_logits/0.5"`` keys) and the whole batch, e.g. an
extra target computed in the pipeline (``boundary_weighted_cross_entropy`` reads
``batch["boundary_distance"]``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from segjax import registry


def register_loss(
  fn=None, *, name: str | None = None, takes_batch: bool = False, kind: str = "multiclass"
):
  """Decorator registering a loss by name for ``config.loss`` / ``config.losses``.

  ``takes_batch=True`` marks a batch loss (see the module docstring); ``kind`` says what
  `check_loss` feeds it: ``"multiclass"`` (logits ``[B,H,W,C]`` and class labels), ``"binary"``
  (logits ``[B,H,W,1]`` and 0/1 labels), ``"regression"`` (a float prediction and a target of
  its shape) or ``"mask_classification"`` (per-query classes and masks, e.g.
  ``mask2former_loss``; outside `check_loss`'s per-pixel contract).
  """
  if fn is None:
    return lambda f: register_loss(f, name=name, takes_batch=takes_batch, kind=kind)
  fn.takes_batch = takes_batch
  fn.loss_kind = kind
  return registry.register("loss", name)(fn)


def takes_batch(fn) -> bool:
  """Whether ``fn`` (possibly a ``functools.partial``) is a batch loss."""
  return bool(getattr(getattr(fn, "func", fn), "takes_batch", False))


def loss_kind(fn) -> str:
  return getattr(getattr(fn, "func", fn), "loss_kind", "multiclass")


def _valid_mask(labels, ignore_label):
  return labels != ignore_label


def safe_divide(num, den):
  """``num / den`` where ``den > 0``, else 0 (with finite gradients)."""
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1), 0.0)


@register_loss
def cross_entropy(
  logits,
  labels,
  *,
  ignore_label: int = 255,
  class_weights=None,
  label_smoothing: float = 0.0,
  top_k_percent: float = 1.0,
  pixel_weights=None,
):
  """Softmax cross-entropy averaged over the non-ignored pixels.

  ``loss = sum_i w_{y_i} l_i / sum_i w_{y_i}`` with ``l_i = -sum_c q_ic log p_ic`` and the smoothed
  target ``q = (1 - s) onehot(y) + s / C`` (``w`` = ``class_weights`` or 1). This equals PyTorch's
  ``F.cross_entropy(..., weight=class_weights, ignore_index=ignore_label, label_smoothing=s)`` with
  ``reduction="mean"`` for ``top_k_percent=1``. With ``top_k_percent < 1`` only the hardest
  ``ceil(top_k_percent * H * W)`` pixels of each image are kept (bootstrapped CE of Panoptic-DeepLab,
  normalised by the number of valid pixels among them, as deeplab2 does); class weights then scale
  the per-pixel losses and the normaliser is the kept valid count.
  ``pixel_weights`` (``[B,H,W]``) multiply each pixel's loss without entering the normaliser
  (Panoptic-DeepLab's up-weighting of small instances); pixels of weight 0 count as ignored.
  Absent classes need no convention; all pixels ignored gives 0.
  """
  logits = logits.astype(jnp.float32)
  num_classes = logits.shape[-1]
  valid = _valid_mask(labels, ignore_label)
  if pixel_weights is not None:
    valid &= jnp.asarray(pixel_weights) > 0
  safe_labels = jnp.where(valid, labels, 0)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  onehot = jax.nn.one_hot(safe_labels, num_classes, dtype=jnp.float32)
  weights = (
    jnp.ones((num_classes,), jnp.float32)
    if class_weights is None
    else jnp.asarray(class_weights, jnp.float32)
  )
  if weights.shape != (num_classes,):
    raise ValueError(f"class_weights has shape {weights.shape}; expected ({num_classes},).")
  nll = -jnp.sum(onehot * log_probs, axis=-1) * weights[safe_labels]
  smooth_term = -jnp.sum(log_probs * weights, axis=-1) / num_classes
  per_pixel = (1.0 - label_smoothing) * nll + label_smoothing * smooth_term
  if pixel_weights is not None:
    per_pixel = per_pixel * jnp.asarray(pixel_weights, jnp.float32)
  pixel_weight = jnp.where(valid, weights[safe_labels], 0.0)
  per_pixel = jnp.where(valid, per_pixel, 0.0)
  if top_k_percent >= 1.0:
    return safe_divide(jnp.sum(per_pixel), jnp.sum(pixel_weight))
  if not 0.0 < top_k_percent:
    raise ValueError(f"top_k_percent must be in (0, 1]; got {top_k_percent}.")
  batch = per_pixel.shape[0]
  flat = per_pixel.reshape(batch, -1)
  k = max(1, math.ceil(top_k_percent * flat.shape[1]))
  # Ignored pixels get -1 so that they are picked only when fewer than k pixels are valid.
  ranked = jnp.where(valid.reshape(batch, -1), flat, -1.0)
  top, _ = jax.lax.top_k(ranked, k)
  kept = top >= 0
  return safe_divide(jnp.sum(jnp.where(kept, top, 0.0)), jnp.sum(kept))


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
  return safe_divide(jnp.sum(jnp.where(present, per_class_loss, 0.0)), jnp.sum(present))


@register_loss
def tversky_loss(
  logits,
  labels,
  *,
  mode: str = "multiclass",
  alpha: float = 0.5,
  beta: float = 0.5,
  smooth: float = 0.0,
  eps: float = 1e-7,
  ignore_label: int = 255,
  per_image: bool = False,
):
  """``1 - TI_c`` averaged over the classes present in the ground truth.

  ``TI_c = (TP_c + smooth) / max(TP_c + alpha FP_c + beta FN_c + smooth, eps)`` with soft counts
  from softmax (``"multiclass"``) or sigmoid (``"binary"``, ``"multilabel"``) probabilities, summed
  over the whole batch (or per image when ``per_image``, then averaged over images). ``alpha``
  weights false positives, ``beta`` false negatives. Equals segmentation_models_pytorch's
  ``TverskyLoss`` when every class is present; smp also averages over absent classes (counting them
  as 0), segjax leaves them out of the mean, so the loss does not shrink as classes go missing.
  """
  tp, fp, fn, support = soft_confusion(
    logits, labels, mode=mode, ignore_label=ignore_label, per_image=per_image
  )
  index = (tp + smooth) / jnp.maximum(tp + alpha * fp + beta * fn + smooth, eps)
  return _mean_over_present(1.0 - index, support)


@register_loss
def dice_loss(
  logits,
  labels,
  *,
  mode: str = "multiclass",
  smooth: float = 0.0,
  eps: float = 1e-7,
  ignore_label: int = 255,
  per_image: bool = False,
):
  """``1 - Dice_c`` averaged over present classes, ``Dice = (2TP + s) / max(2TP + FP + FN + s, eps)``.

  The Tversky loss with ``alpha = beta = 0.5``; equals segmentation_models_pytorch's ``DiceLoss``
  when every class is present (see ``tversky_loss`` for the absent-class convention).
  """
  return tversky_loss(
    logits,
    labels,
    mode=mode,
    alpha=0.5,
    beta=0.5,
    smooth=smooth / 2,
    eps=eps / 2,
    ignore_label=ignore_label,
    per_image=per_image,
  )


@register_loss
def jaccard_loss(
  logits,
  labels,
  *,
  mode: str = "multiclass",
  smooth: float = 0.0,
  eps: float = 1e-7,
  ignore_label: int = 255,
  per_image: bool = False,
):
  """``1 - IoU_c`` averaged over present classes, ``IoU = (TP + s) / max(TP + FP + FN + s, eps)``.

  The Tversky loss with ``alpha = beta = 1``; equals segmentation_models_pytorch's ``JaccardLoss``
  when every class is present.
  """
  return tversky_loss(
    logits,
    labels,
    mode=mode,
    alpha=1.0,
    beta=1.0,
    smooth=smooth,
    eps=eps,
    ignore_label=ignore_label,
    per_image=per_image,
  )


@register_loss
def focal_tversky_loss(
  logits,
  labels,
  *,
  mode: str = "multiclass",
  alpha: float = 0.3,
  beta: float = 0.7,
  gamma: float = 0.75,
  smooth: float = 0.0,
  eps: float = 1e-7,
  ignore_label: int = 255,
  per_image: bool = False,
):
  """Mean over present classes of ``(1 - TI_c) ** gamma`` (Abraham & Khan 2019, ``gamma = 1/γ_paper``).

  ``TI_c`` as in ``tversky_loss``. segmentation_models_pytorch's ``TverskyLoss(gamma=...)`` raises the
  *mean* to the power instead; the two agree for ``gamma = 1``.
  """
  tp, fp, fn, support = soft_confusion(
    logits, labels, mode=mode, ignore_label=ignore_label, per_image=per_image
  )
  index = (tp + smooth) / jnp.maximum(tp + alpha * fp + beta * fn + smooth, eps)
  # The epsilon keeps the gradient of x ** gamma (gamma < 1) finite where a class is perfect.
  return _mean_over_present(jnp.maximum(1.0 - index, 1e-12) ** gamma, support)


@register_loss(kind="binary")
def binary_cross_entropy(logits, targets, *, pos_weight=None, ignore_label: int = 255):
  """Sigmoid cross-entropy averaged over non-ignored elements.

  ``l = -(w_pos t log s(x) + (1 - t) log(1 - s(x)))``; equals PyTorch's
  ``F.binary_cross_entropy_with_logits(x, t, pos_weight=w_pos)`` (mean) on the kept elements.
  ``logits`` ``[B,H,W]`` or ``[B,H,W,1]`` (or ``[B,H,W,C]`` with multi-hot ``targets``).
  """
  logits = logits.astype(jnp.float32)
  if logits.ndim == targets.ndim + 1 and logits.shape[-1] == 1:
    logits = logits[..., 0]
  valid = _valid_mask(targets, ignore_label)
  t = jnp.where(valid, targets, 0).astype(jnp.float32)
  log_p, log_not_p = jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
  w = 1.0 if pos_weight is None else jnp.asarray(pos_weight, jnp.float32)
  per_element = -(w * t * log_p + (1 - t) * log_not_p)
  return safe_divide(jnp.sum(jnp.where(valid, per_element, 0.0)), jnp.sum(valid))


@register_loss
def focal_loss(
  logits,
  labels,
  *,
  mode: str = "multiclass",
  gamma: float = 2.0,
  alpha=None,
  ignore_label: int = 255,
):
  """Focal loss (Lin et al. 2017) averaged over non-ignored pixels (elements for sigmoid modes).

  ``"multiclass"``: ``-alpha_y (1 - p_y)^gamma log p_y`` with softmax ``p`` (``alpha`` one weight per
  class, or None). ``"binary"``/``"multilabel"``: ``-(1 - p_t)^gamma log p_t`` with sigmoid ``p_t``,
  times ``alpha t + (1 - alpha)(1 - t)`` when ``alpha`` is a float; equals
  segmentation_models_pytorch's ``FocalLoss(mode="binary", alpha, gamma, ignore_index)``.
  """
  logits = logits.astype(jnp.float32)
  if mode == "multiclass":
    valid = _valid_mask(labels, ignore_label)
    safe = jnp.where(valid, labels, 0)
    log_p = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), safe[..., None], -1)[..., 0]
    per_pixel = -((1.0 - jnp.exp(log_p)) ** gamma) * log_p
    if alpha is not None:
      per_pixel = per_pixel * jnp.asarray(alpha, jnp.float32)[safe]
    return safe_divide(jnp.sum(jnp.where(valid, per_pixel, 0.0)), jnp.sum(valid))
  if mode not in ("binary", "multilabel"):
    raise ValueError(f"Unknown mode {mode!r}; expected 'multiclass', 'binary' or 'multilabel'.")
  if logits.ndim == labels.ndim + 1 and logits.shape[-1] == 1:
    logits = logits[..., 0]
  valid = _valid_mask(labels, ignore_label)
  t = jnp.where(valid, labels, 0).astype(jnp.float32)
  log_pt = t * jax.nn.log_sigmoid(logits) + (1 - t) * jax.nn.log_sigmoid(-logits)
  per_element = -((1.0 - jnp.exp(log_pt)) ** gamma) * log_pt
  if alpha is not None:
    per_element = per_element * (alpha * t + (1 - alpha) * (1 - t))
  return safe_divide(jnp.sum(jnp.where(valid, per_element, 0.0)), jnp.sum(valid))


def _lovasz_gradient(sorted_targets):
  """Gradient of the Lovász extension of the Jaccard loss at sorted errors (Berman et al. 2018)."""
  total = jnp.sum(sorted_targets)
  intersection = total - jnp.cumsum(sorted_targets)
  union = total + jnp.cumsum(1.0 - sorted_targets)
  jaccard = 1.0 - intersection / jnp.maximum(union, 1e-12)
  return jnp.concatenate([jaccard[:1], jaccard[1:] - jaccard[:-1]])


@register_loss
def lovasz_softmax_loss(logits, labels, *, ignore_label: int = 255, per_image: bool = False):
  """Lovász-softmax loss (Berman et al. 2018) averaged over the classes present in the ground truth.

  Errors ``|t_c - p_c|`` of the non-ignored pixels, sorted descending, dotted with the Lovász
  gradient of the Jaccard loss. Pixels of the whole batch are pooled unless ``per_image``. Equals
  segmentation_models_pytorch's ``LovaszLoss(mode="multiclass")`` (``classes="present"``). Ignored
  pixels are given error 0 and target 0, which leaves the sum unchanged.
  """
  probs, targets, valid = _probabilities_and_targets(logits, labels, "multiclass", ignore_label)
  if not per_image:
    probs, targets, valid = (x.reshape(1, -1, x.shape[-1]) for x in (probs, targets, valid))

  def one_class(p, t, v):
    errors = jnp.abs(t - p) * v
    order = jnp.argsort(-errors)
    return jnp.dot(errors[order], _lovasz_gradient((t * v)[order])), jnp.sum(t * v)

  per_class = jax.vmap(jax.vmap(one_class, in_axes=(1, 1, 1)))  # over images, then classes
  loss, support = per_class(probs, targets, valid)
  per_image_loss = jax.vmap(_mean_over_present)(loss, support)
  has_pixels = jnp.sum(support, axis=1) > 0
  return safe_divide(jnp.sum(jnp.where(has_pixels, per_image_loss, 0.0)), jnp.sum(has_pixels))


# ----------------------------------------------------------------------------------------------
# Regression losses (Panoptic-DeepLab's centre heatmap and offsets).
# ----------------------------------------------------------------------------------------------
def _weighted_mean(per_element, pixel_weights):
  """Mean of ``per_element`` ``[B,H,W,...]`` weighted by ``pixel_weights`` ``[B,H,W]`` (broadcast
  over the trailing dimensions, so the normaliser counts every element of a weighted pixel)."""
  if pixel_weights is None:
    return jnp.mean(per_element)
  weights = jnp.asarray(pixel_weights, jnp.float32).reshape(
    pixel_weights.shape + (1,) * (per_element.ndim - pixel_weights.ndim)
  )
  weights = jnp.broadcast_to(weights, per_element.shape)
  return safe_divide(jnp.sum(weights * per_element), jnp.sum(weights))


@register_loss(kind="regression")
def weighted_mse(prediction, target, *, pixel_weights=None, ignore_label: int = 255):
  """``Σ w (p - t)² / Σ w`` over all elements (``w`` = ``pixel_weights`` ``[B,H,W]`` broadcast
  over trailing dimensions, or 1): Panoptic-DeepLab's centre-heatmap loss with ``center_weight``
  (0 on ignored pixels). ``ignore_label`` is accepted for the common signature and unused (the
  targets are real numbers; weights say which pixels count). 0 when every weight is 0."""
  del ignore_label
  error = (jnp.asarray(prediction, jnp.float32) - jnp.asarray(target, jnp.float32)) ** 2
  return _weighted_mean(error, pixel_weights)


@register_loss(kind="regression")
def weighted_l1(prediction, target, *, pixel_weights=None, ignore_label: int = 255):
  """``Σ w |p - t| / Σ w`` over all elements (weights as in `weighted_mse`): Panoptic-DeepLab's
  offset loss with ``offset_weight`` (1 on thing pixels); for offsets ``[B,H,W,2]`` the normaliser
  counts both components, i.e. the mean over (dy, dx) of the selected pixels."""
  del ignore_label
  error = jnp.abs(jnp.asarray(prediction, jnp.float32) - jnp.asarray(target, jnp.float32))
  return _weighted_mean(error, pixel_weights)


# ----------------------------------------------------------------------------------------------
# A batch loss: an extra target computed in the input pipeline.
# ----------------------------------------------------------------------------------------------
@register_loss(takes_batch=True)
def boundary_weighted_cross_entropy(
  outputs,
  batch,
  *,
  output_key: str = "logits",
  target_key: str = "semantic",
  ignore_label: int = 255,
  distance_key: str = "boundary_distance",
  w0: float = 10.0,
  sigma: float = 5.0,
):
  """Cross-entropy with pixels near class boundaries up-weighted, in the spirit of the UNet
  paper's weight map (Ronneberger et al. 2015, eq. 2, with one distance instead of two):
  ``w = 1 + w0 exp(-d² / (2 σ²))``, ``d`` = ``batch[distance_key]`` (pixels to the nearest other
  label, from the ``boundary_distance`` preprocessing op), normalised by ``Σ w`` over the valid
  pixels. Needs ``|boundary_distance(...)`` in ``config.data.train_pp``."""
  if distance_key not in batch:
    raise KeyError(
      f"boundary_weighted_cross_entropy reads batch[{distance_key!r}], which the "
      "input pipeline did not produce: add '|boundary_distance(16)' to "
      "config.data.train_pp."
    )
  distance = jnp.asarray(batch[distance_key], jnp.float32)
  weights = 1.0 + w0 * jnp.exp(-(distance**2) / (2.0 * sigma**2))
  labels = batch[target_key]
  weights = jnp.where(labels == ignore_label, 0.0, weights)
  per_pixel_ce = cross_entropy(
    outputs[output_key], labels, ignore_label=ignore_label, pixel_weights=weights
  )
  # cross_entropy normalises by the number of valid pixels; renormalise by their weight.
  valid = jnp.sum(labels != ignore_label)
  return safe_divide(per_pixel_ce * valid, jnp.sum(weights))
