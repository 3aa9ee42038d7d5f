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
import numpy as np

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
                  label_smoothing: float = 0.0, top_k_percent: float = 1.0, pixel_weights=None):
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
  weights = jnp.ones((num_classes,), jnp.float32) if class_weights is None else jnp.asarray(
      class_weights, jnp.float32)
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


@register_loss
def focal_tversky_loss(logits, labels, *, mode: str = "multiclass", alpha: float = 0.3,
                       beta: float = 0.7, gamma: float = 0.75, smooth: float = 0.0, eps: float = 1e-7,
                       ignore_label: int = 255, per_image: bool = False):
  """Mean over present classes of ``(1 - TI_c) ** gamma`` (Abraham & Khan 2019, ``gamma = 1/γ_paper``).

  ``TI_c`` as in ``tversky_loss``. segmentation_models_pytorch's ``TverskyLoss(gamma=...)`` raises the
  *mean* to the power instead; the two agree for ``gamma = 1``.
  """
  tp, fp, fn, support = soft_confusion(logits, labels, mode=mode, ignore_label=ignore_label,
                                       per_image=per_image)
  index = (tp + smooth) / jnp.maximum(tp + alpha * fp + beta * fn + smooth, eps)
  # The epsilon keeps the gradient of x ** gamma (gamma < 1) finite where a class is perfect.
  return _mean_over_present(jnp.maximum(1.0 - index, 1e-12) ** gamma, support)


@register_loss
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
  return _safe_divide(jnp.sum(jnp.where(valid, per_element, 0.0)), jnp.sum(valid))


@register_loss
def focal_loss(logits, labels, *, mode: str = "multiclass", gamma: float = 2.0, alpha=None,
               ignore_label: int = 255):
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
    return _safe_divide(jnp.sum(jnp.where(valid, per_pixel, 0.0)), jnp.sum(valid))
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
  return _safe_divide(jnp.sum(jnp.where(valid, per_element, 0.0)), jnp.sum(valid))


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
  return _safe_divide(jnp.sum(jnp.where(has_pixels, per_image_loss, 0.0)), jnp.sum(has_pixels))


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


# ----------------------------------------------------------------------------------------------
# Prototyping aid.
# ----------------------------------------------------------------------------------------------
class LossCheckError(AssertionError):
  """A candidate loss breaks the loss contract; the message lists every failed check."""


def check_loss(fn, *, num_classes: int = 3, shape=(2, 8, 8), ignore_label: int = 255,
               seed: int = 0, rtol: float = 1e-4) -> dict[str, str]:
  """Checks a new loss against the segjax loss contract before it goes into a long run.

  ``fn(logits [B,H,W,C], labels [B,H,W], *, ignore_label) -> scalar``. Checks: scalar float32;
  jit-compilable (same value as eager); differentiable with finite, non-zero gradients; finite
  value and gradients with a class absent, with every pixel ignored, with extreme logits (±1e4);
  float32 result close to the float32 one for bf16 logits; blind to the logits of ignored pixels;
  invariant to the order of the batch. Returns ``{check: "ok"}`` or raises ``LossCheckError``
  naming each failed check and why.
  """
  rng = np.random.default_rng(seed)
  logits = jnp.asarray(rng.normal(size=(*shape, num_classes)) * 2, jnp.float32)
  labels_np = rng.integers(0, num_classes, size=shape)
  labels_np[rng.random(shape) < 0.2] = ignore_label
  labels = jnp.asarray(labels_np, jnp.int32)
  call = lambda x, y: fn(x, y, ignore_label=ignore_label)

  def finite_value_and_grad(x, y):
    value, grads = jax.value_and_grad(lambda z: jnp.asarray(call(z, y), jnp.float32))(x)
    if not bool(jnp.isfinite(value)):
      return f"value is {float(value)}"
    if not bool(jnp.all(jnp.isfinite(grads))):
      return "gradient has NaN or inf entries"
    return None

  def scalar():
    value = call(logits, labels)
    if jnp.shape(value) != ():
      return f"returns shape {jnp.shape(value)}, not a scalar"
    if jnp.asarray(value).dtype != jnp.float32:
      return f"returns {jnp.asarray(value).dtype}, not float32"

  def jit():
    eager, compiled = call(logits, labels), jax.jit(call)(logits, labels)
    if not np.allclose(eager, compiled, rtol=rtol, atol=1e-6):
      return f"jit gives {float(compiled)} but eager {float(eager)}"

  def gradient():
    problem = finite_value_and_grad(logits, labels)
    if problem:
      return problem
    if not bool(jnp.any(jax.grad(lambda z: jnp.asarray(call(z, labels), jnp.float32))(logits) != 0)):
      return "gradient is zero everywhere (is the loss built on argmax or rounding?)"

  def absent_class():
    return finite_value_and_grad(logits, jnp.where(labels == num_classes - 1, 0, labels))

  def all_ignored():
    return finite_value_and_grad(logits, jnp.full_like(labels, ignore_label))

  def extreme_logits():
    return finite_value_and_grad(jnp.sign(logits) * 1e4, labels)

  def bf16():
    value = call(logits.astype(jnp.bfloat16), labels)
    if jnp.asarray(value).dtype != jnp.float32:
      return f"bf16 logits give a {jnp.asarray(value).dtype} result, not float32"
    if not np.allclose(value, call(logits, labels), rtol=5e-2, atol=1e-3):
      return f"bf16 logits give {float(value)}, float32 logits {float(call(logits, labels))}"

  def ignore_blind():
    changed = jnp.where((labels == ignore_label)[..., None], 50.0 * jnp.sign(logits), logits)
    if not np.allclose(call(changed, labels), call(logits, labels), rtol=rtol, atol=1e-6):
      return "changing the logits of ignored pixels changes the loss"

  def batch_order():
    flipped = call(logits[::-1], labels[::-1])
    if not np.allclose(flipped, call(logits, labels), rtol=rtol, atol=1e-6):
      return f"reversing the batch changes the loss ({float(flipped)} vs {float(call(logits, labels))})"

  checks = {"scalar float32": scalar, "jit": jit, "gradient": gradient, "absent class": absent_class,
            "all pixels ignored": all_ignored, "extreme logits": extreme_logits, "bf16 logits": bf16,
            "blind to ignored pixels": ignore_blind, "batch order": batch_order}
  report, failures = {}, []
  for name, check in checks.items():
    try:
      problem = check()
    except Exception as e:  # a check that cannot even run is a failure of that check
      problem = f"raised {type(e).__name__}: {e}"
    report[name] = problem or "ok"
    if problem:
      failures.append(f"  - {name}: {problem}")
  if failures:
    fn_name = getattr(fn, "__name__", repr(fn))
    raise LossCheckError(f"Loss {fn_name} breaks the loss contract:\n" + "\n".join(failures))
  return report
