"""Optimizer and learning-rate schedule from ``config.optimizer``: both looked up in the registry
(kinds ``"optimizer"`` and ``"schedule"``), so a new one is one decorated function
(docs/extending.md)."""

from __future__ import annotations

import re

import jax
import optax

from segjax import registry


@registry.register("schedule", "cosine")
def cosine(opt_config, peak: float, steps: int, total_steps: int) -> optax.Schedule:
  """Cosine decay from ``peak`` to ``end_factor`` × peak over ``steps``."""
  del total_steps
  return optax.cosine_decay_schedule(peak, steps, alpha=opt_config.get("end_factor", 0.0))


@registry.register("schedule", "poly")
def poly(opt_config, peak: float, steps: int, total_steps: int) -> optax.Schedule:
  """``(1 - t/T)^power`` down to ``end_factor`` × peak (power 0.9: DeepLab; 2.0: NVIDIA's HMSA)."""
  del total_steps
  return optax.polynomial_schedule(
    peak,
    peak * opt_config.get("end_factor", 0.0),
    power=opt_config.get("power", 0.9),
    transition_steps=steps,
  )


@registry.register("schedule", "step")
def step(opt_config, peak: float, steps: int, total_steps: int) -> optax.Schedule:
  """× ``gamma`` at each fraction of the run in ``boundaries`` (Mask2Former's COCO:
  ``(0.889, 0.963)``)."""
  boundaries = opt_config.get("boundaries", ())
  if any(not 0 < b < 1 for b in boundaries):
    raise ValueError(
      f"config.optimizer.boundaries={tuple(boundaries)}: fractions of the run in (0, 1)"
    )
  warmup = total_steps - steps
  return optax.piecewise_constant_schedule(
    peak, {int(b * total_steps) - warmup: opt_config.get("gamma", 0.1) for b in boundaries}
  )


@registry.register("schedule", "constant")
def constant(opt_config, peak: float, steps: int, total_steps: int) -> optax.Schedule:
  del opt_config, steps, total_steps
  return optax.constant_schedule(peak)


def make_schedule(opt_config, total_steps: int) -> optax.Schedule:
  """Linear warm-up over ``warmup_steps`` then the schedule ``config.optimizer.schedule`` names (a
  registered ``"schedule"``, default ``"cosine"``, or ``"package.module:function"``): a function
  ``(opt_config, peak, steps, total_steps) -> optax.Schedule`` of the steps after the warm-up."""
  peak = opt_config.learning_rate
  warmup = min(opt_config.get("warmup_steps", 0), total_steps)
  decay = _lookup("schedule", opt_config.get("schedule", "cosine"))(
    opt_config, peak, max(total_steps - warmup, 1), total_steps
  )
  if not warmup:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


@registry.register("optimizer", "adamw")
def adamw(opt_config, schedule: optax.Schedule) -> optax.GradientTransformation:
  """AdamW with weight decay on convolution/dense kernels only (not biases or norm scales)."""
  mask = lambda params: jax.tree_util.tree_map_with_path(
    lambda path, _: getattr(path[-1], "key", None) == "kernel", params
  )
  return optax.adamw(
    schedule,
    b1=opt_config.get("b1", 0.9),
    b2=opt_config.get("b2", 0.999),
    weight_decay=opt_config.get("weight_decay", 0.0),
    mask=mask,
  )


@registry.register("optimizer", "adam")
def adam(opt_config, schedule: optax.Schedule) -> optax.GradientTransformation:
  del opt_config
  return optax.adam(schedule)


@registry.register("optimizer", "sgd")
def sgd(opt_config, schedule: optax.Schedule) -> optax.GradientTransformation:
  """SGD with momentum (Nesterov optional) and L2 weight decay."""
  return optax.chain(
    optax.add_decayed_weights(opt_config.get("weight_decay", 0.0)),
    optax.sgd(
      schedule, momentum=opt_config.get("momentum", 0.9), nesterov=opt_config.get("nesterov", False)
    ),
  )


def _lookup(kind: str, name: str):
  try:
    return registry.lookup(kind, name)
  except KeyError as e:
    raise KeyError(
      f"config.optimizer.{'name' if kind == 'optimizer' else kind}: {e.args[0]}"
    ) from None


def make_optimizer(opt_config, total_steps: int) -> optax.GradientTransformation:
  """The optimizer ``config.optimizer.name`` names (a registered ``"optimizer"`` — ``adamw``,
  ``adam``, ``sgd`` — or ``"package.module:function"``: ``(opt_config, schedule) ->
  optax.GradientTransformation``) over `make_schedule`; ``lr_multipliers`` = ``((pattern,
  factor), ...)`` scales the updates of the parameters whose ``/``-joined path matches a pattern
  (``re.search``; the first match counts), e.g. ``(("pixel_level_module/encoder/", 0.1),)`` for
  Mask2Former's backbone at 0.1× the rate, or ``(("decode_head/", 10.0),)`` for SegFormer's head
  at 10×; ``grad_clip_norm`` clips the global gradient norm first."""
  tx = _lookup("optimizer", opt_config.name)(opt_config, make_schedule(opt_config, total_steps))
  multipliers = tuple(tuple(m) for m in opt_config.get("lr_multipliers", ()) or ())
  if multipliers:
    tx = optax.chain(tx, scale_by_path(multipliers))
  clip = opt_config.get("grad_clip_norm", 0.0)
  return optax.chain(optax.clip_by_global_norm(clip), tx) if clip else tx


def path_factor(path: str, multipliers) -> float:
  """The factor of the first ``(pattern, factor)`` whose pattern matches ``path``, else 1."""
  return next((float(f) for p, f in multipliers if re.search(p, path)), 1.0)


def scale_by_path(multipliers) -> optax.GradientTransformation:
  """Multiplies each update by `path_factor` of its parameter's path (a per-group learning rate,
  as PyTorch's parameter groups; AdamW's decoupled decay is scaled with it, as there)."""
  for entry in multipliers:
    if len(entry) != 2 or not isinstance(entry[0], str):
      raise ValueError(
        f"config.optimizer.lr_multipliers entry {entry!r}: expected (path pattern, factor)"
      )
    re.compile(entry[0])

  name = lambda path: "/".join(str(getattr(k, "key", k)) for k in path)

  def init(params):
    paths = [name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    unused = [p for p, _ in multipliers if not any(re.search(p, q) for q in paths)]
    if unused:
      raise ValueError(
        f"config.optimizer.lr_multipliers: {unused} match no parameter of the "
        f"model (e.g. {paths[:3]})"
      )
    return optax.EmptyState()

  def update(updates, state, params=None):
    del params
    return jax.tree_util.tree_map_with_path(
      lambda path, u: u * path_factor(name(path), multipliers), updates
    ), state

  return optax.GradientTransformation(init, update)
