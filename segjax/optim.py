"""Optimizer and learning-rate schedule from ``config.optimizer``."""
from __future__ import annotations

import jax
import optax


def make_schedule(opt_config, total_steps: int) -> optax.Schedule:
  """Linear warm-up then ``"cosine"``, ``"poly"`` (``(1 - t/T)^power`` down to ``end_factor`` ×
  peak; power 0.9 is the DeepLab schedule, 2.0 NVIDIA's HMSA recipe) or ``"constant"``."""
  peak = opt_config.learning_rate
  warmup = min(opt_config.get("warmup_steps", 0), total_steps)
  decay_steps = max(total_steps - warmup, 1)
  name = opt_config.get("schedule", "cosine")
  if name == "cosine":
    decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=opt_config.get("end_factor", 0.0))
  elif name == "poly":
    decay = optax.polynomial_schedule(peak, peak * opt_config.get("end_factor", 0.0),
                                      power=opt_config.get("power", 0.9),
                                      transition_steps=decay_steps)
  elif name == "constant":
    decay = optax.constant_schedule(peak)
  else:
    raise KeyError(f"Unknown config.optimizer.schedule {name!r}; use 'cosine', 'poly' or 'constant'.")
  if not warmup:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def make_optimizer(opt_config, total_steps: int) -> optax.GradientTransformation:
  """``adamw`` (weight decay on kernels only), ``sgd`` (momentum, Nesterov optional), ``adam``."""
  schedule = make_schedule(opt_config, total_steps)
  name = opt_config.name
  if name == "adamw":
    # Decay convolution/dense kernels, not biases or BatchNorm scales.
    mask = lambda params: jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "kernel", params)
    tx = optax.adamw(schedule, b1=opt_config.get("b1", 0.9), b2=opt_config.get("b2", 0.999),
                     weight_decay=opt_config.get("weight_decay", 0.0), mask=mask)
  elif name == "adam":
    tx = optax.adam(schedule)
  elif name == "sgd":
    tx = optax.chain(optax.add_decayed_weights(opt_config.get("weight_decay", 0.0)),
                     optax.sgd(schedule, momentum=opt_config.get("momentum", 0.9),
                               nesterov=opt_config.get("nesterov", False)))
  else:
    raise KeyError(f"Unknown config.optimizer.name {name!r}; use 'adamw', 'adam' or 'sgd'.")
  clip = opt_config.get("grad_clip_norm", 0.0)
  return optax.chain(optax.clip_by_global_norm(clip), tx) if clip else tx
