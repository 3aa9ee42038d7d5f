"""``check_loss``: a new loss against the loss contract, before it goes into a long run."""

from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from segjax.losses import functions


class LossCheckError(AssertionError):
  """A candidate loss breaks the loss contract; the message lists every failed check."""


def _inputs(kind: str, num_classes: int, shape, ignore_label: int, rng):
  """``(prediction, target, ignored mask)`` of random values for a loss of ``kind``."""
  ignored = rng.random(shape) < 0.2
  if kind == "regression":
    prediction = jnp.asarray(rng.normal(size=(*shape, 2)), jnp.float32)
    return prediction, jnp.asarray(rng.normal(size=(*shape, 2)), jnp.float32), ignored
  channels = 1 if kind == "binary" else num_classes
  logits = jnp.asarray(rng.normal(size=(*shape, channels)) * 2, jnp.float32)
  labels = rng.integers(0, 2 if kind == "binary" else num_classes, size=shape)
  labels[ignored] = ignore_label
  return logits, jnp.asarray(labels, jnp.int32), ignored


def check_loss(
  fn,
  *,
  num_classes: int = 3,
  shape=(2, 8, 8),
  ignore_label: int = 255,
  seed: int = 0,
  rtol: float = 1e-4,
  batch_extras: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
  kind: str | None = None,
) -> dict[str, str]:
  """Checks a loss against the segjax loss contract; returns ``{check: "ok"}`` or raises
  `LossCheckError` naming each failed check and why.

  Plain losses are called as ``fn(prediction, target, *, ignore_label)``; batch losses
  (``@register_loss(takes_batch=True)``) as ``fn(outputs, batch, *, output_key, target_key,
  ignore_label)`` with ``outputs = {"logits": ...}``, ``batch = {"semantic": labels, ...}`` and
  one entry per ``batch_extras`` item (``key -> function of the numpy labels``). ``kind`` (default:
  the one the loss was registered with) says what it is fed: ``"multiclass"`` logits ``[B,H,W,C]``
  and labels, ``"binary"`` logits ``[B,H,W,1]`` and 0/1 labels, or ``"regression"`` a float
  prediction and target ``[B,H,W,2]`` (with ``pixel_weights`` 0 where "ignored").

  Checks: scalar float32; jit-compilable (same value as eager); differentiable with finite,
  non-zero gradients; finite value and gradients with a class absent, with every pixel ignored,
  with extreme predictions (±1e4); float32 result close to the float32 one for bf16 inputs; blind
  to the predictions at ignored pixels; invariant to the order of the batch.
  """
  kind = kind or functions.loss_kind(fn)
  if kind == "mask_classification":
    raise ValueError(
      "check_loss checks per-pixel losses; a mask-classification loss reads "
      "per-query classes and masks and counts void pixels as background of every "
      "mask (Mask2Former), so it is tested on its own (tests/test_mask2former.py)"
    )
  if kind not in ("multiclass", "binary", "regression"):
    raise ValueError(f"kind must be 'multiclass', 'binary' or 'regression', not {kind!r}")
  batch_loss = functions.takes_batch(fn)
  extras = dict(batch_extras or {})
  x0, y0, ignored0 = _inputs(kind, num_classes, shape, ignore_label, np.random.default_rng(seed))

  def call(x, y, ignored=None):
    """The loss of prediction ``x`` against ``y`` (``ignored``: the regression weights' zeros)."""
    if kind == "regression":
      weights = jnp.where(jnp.asarray(ignored0 if ignored is None else ignored), 0.0, 1.0)
      return fn(x, y, pixel_weights=weights, ignore_label=ignore_label)
    if not batch_loss:
      return fn(x, y, ignore_label=ignore_label)
    batch = {"semantic": y, **{k: jnp.asarray(make(np.asarray(y))) for k, make in extras.items()}}
    return fn(
      {"logits": x}, batch, output_key="logits", target_key="semantic", ignore_label=ignore_label
    )

  def value_of(x, y, ignored=None):
    return jnp.asarray(call(x, y, ignored), jnp.float32)

  def finite_value_and_grad(x, y, ignored=None):
    value, grads = jax.value_and_grad(lambda z: value_of(z, y, ignored))(x)
    if not bool(jnp.isfinite(value)):
      return f"value is {float(value)}"
    if not bool(jnp.all(jnp.isfinite(grads))):
      return "gradient has NaN or inf entries"
    return None

  def scalar():
    value = call(x0, y0)
    if jnp.shape(value) != ():
      return f"returns shape {jnp.shape(value)}, not a scalar"
    if jnp.asarray(value).dtype != jnp.float32:
      return f"returns {jnp.asarray(value).dtype}, not float32"

  def jit():
    eager, compiled = call(x0, y0), jax.jit(lambda x: call(x, y0))(x0)
    if not np.allclose(eager, compiled, rtol=rtol, atol=1e-6):
      return f"jit gives {float(compiled)} but eager {float(eager)}"

  def gradient():
    problem = finite_value_and_grad(x0, y0)
    if problem:
      return problem
    if not bool(jnp.any(jax.grad(lambda z: value_of(z, y0))(x0) != 0)):
      return "gradient is zero everywhere (is the loss built on argmax or rounding?)"

  def absent_class():
    if kind == "regression":
      return finite_value_and_grad(x0, jnp.zeros_like(y0))
    last = 1 if kind == "binary" else num_classes - 1
    return finite_value_and_grad(x0, jnp.where(y0 == last, 0, y0))

  def all_ignored():
    if kind == "regression":
      return finite_value_and_grad(x0, y0, np.ones(shape, bool))
    return finite_value_and_grad(x0, jnp.full_like(y0, ignore_label))

  def extreme():
    return finite_value_and_grad(jnp.sign(x0) * 1e4, y0)

  def bf16():
    value = call(x0.astype(jnp.bfloat16), y0)
    if jnp.asarray(value).dtype != jnp.float32:
      return f"bf16 inputs give a {jnp.asarray(value).dtype} result, not float32"
    if not np.allclose(value, call(x0, y0), rtol=5e-2, atol=1e-3):
      return f"bf16 inputs give {float(value)}, float32 inputs {float(call(x0, y0))}"

  def ignore_blind():
    changed = jnp.where(jnp.asarray(ignored0)[..., None], 50.0 * jnp.sign(x0), x0)
    if not np.allclose(call(changed, y0), call(x0, y0), rtol=rtol, atol=1e-6):
      return "changing the predictions at ignored pixels changes the loss"

  def batch_order():
    if kind == "regression":
      flipped = call(x0[::-1], y0[::-1], ignored0[::-1])
    else:
      flipped = call(x0[::-1], y0[::-1])
    if not np.allclose(flipped, call(x0, y0), rtol=rtol, atol=1e-6):
      return f"reversing the batch changes the loss ({float(flipped)} vs {float(call(x0, y0))})"

  checks = {
    "scalar float32": scalar,
    "jit": jit,
    "gradient": gradient,
    "absent class": absent_class,
    "all pixels ignored": all_ignored,
    "extreme logits": extreme,
    "bf16 logits": bf16,
    "blind to ignored pixels": ignore_blind,
    "batch order": batch_order,
  }
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
    fn_name = getattr(getattr(fn, "func", fn), "__name__", repr(fn))
    raise LossCheckError(f"Loss {fn_name} breaks the loss contract:\n" + "\n".join(failures))
  return report
