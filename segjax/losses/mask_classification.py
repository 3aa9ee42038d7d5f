"""Mask-classification training (Mask2Former, Cheng et al. 2022): Hungarian matching of predicted
masks to target segments, then class cross-entropy and point-sampled mask losses, on the last
decoder prediction and on every earlier one (deep supervision).

Everything runs inside the compiled train step: the targets are built from the label maps with
static shapes (at most ``max_targets`` segments per image), and the assignment is an exact
minimum-cost matching computed on the device (`linear_sum_assignment`: the shortest augmenting
path algorithm of Jonker–Volgenant as in SciPy, one ``while_loop`` per target), so no step waits
for the host.

Config::

  config.losses = (("class_logits", "panoptic", "mask2former_loss(num_points=12544)", 1.0),)

reads ``class_logits``, ``mask_logits`` and ``aux_*`` from the model and the segments of
``batch["panoptic"]`` (one per id; with ``target_key="semantic"``, one per class present) whose
classes come from ``batch["semantic"]``; pixels of ``ignore_label`` belong to no segment.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from segjax.losses.functions import register_loss
from segjax.losses.matching import linear_sum_assignment
from segjax.models.sampling import bilinear_sample, bilinear_taps, separable_point_values

_NO_ID = jnp.iinfo(jnp.int32).max


def segment_targets(ids: jax.Array, semantic: jax.Array, *, max_targets: int, ignore_label: int):
  """The segments of one label map: ``(segment_ids [T] int32, classes [T] int32, valid [T])``
  with ``T = max_targets``: one per distinct value of ``ids`` (panoptic ids, or the semantic map
  itself) outside ``ignore_label`` pixels, in increasing order, its class read from ``semantic``;
  when an image has more segments, those of the largest ids are dropped. No ``[T,H,W]`` masks are
  made: `segment_point_values` samples them at points from the id map."""
  ids = jnp.where(semantic == ignore_label, _NO_ID, ids.astype(jnp.int32)).reshape(-1)
  segment_ids = jnp.unique(ids, size=max_targets, fill_value=_NO_ID)
  valid = segment_ids != _NO_ID
  index = jnp.clip(jnp.searchsorted(segment_ids, ids), 0, max_targets - 1)
  found = (segment_ids[index] == ids) & (ids != _NO_ID)
  classes = (
    jnp.full(max_targets, -1, jnp.int32)
    .at[jnp.where(found, index, max_targets)]
    .max(semantic.reshape(-1).astype(jnp.int32), mode="drop")
  )
  return segment_ids, jnp.maximum(classes, 0), valid


def segment_point_values(
  ids: jax.Array,
  segment_ids: jax.Array,
  valid: jax.Array,
  points: jax.Array,
  ignore_label: int,
  semantic: jax.Array,
) -> jax.Array:
  """Each segment's binary mask (``ids == segment``, void pixels in none) bilinearly sampled at
  ``points`` ``[P,2]`` (shared) or ``[T,P,2]`` (per segment) → ``[T,P]``, from the taps of the
  ``[H,W]`` id map (`segjax.models.sampling.bilinear_taps`)."""
  height, width = ids.shape
  ids = jnp.where(semantic == ignore_label, _NO_ID, ids.astype(jnp.int32)).reshape(-1)
  index, weight = bilinear_taps(points, height, width)  # [..., P, 4]
  # Rows of a [H·W, 1] table: the TPU compiler serves these gathers ~30x cheaper than elements of
  # the flat map (docs/models.md).
  tap_ids = jnp.take_along_axis(ids[:, None], index.reshape(-1, 1), axis=0).reshape(index.shape)
  if points.ndim == 2:
    tap_ids, weight = tap_ids[None], weight[None]
  hits = (tap_ids == segment_ids[:, None, None]) & valid[:, None, None]
  return jnp.sum(jnp.where(hits, weight, 0.0), axis=-1)


def segment_grid_values(
  ids: jax.Array,
  segment_ids: jax.Array,
  valid: jax.Array,
  size: tuple[int, int],
  ignore_label: int,
  semantic: jax.Array,
) -> jax.Array:
  """`segment_point_values` at the pixel centres of a ``size`` = (h, w) grid whose pixels cover
  ``s × s`` pixels of the ``[H,W]`` id map (H = s·h, W = s·w) → ``[T,h,w]``: the same bilinear
  values (a 2×2 mean for even ``s``, one pixel for odd), read with strided slices, no gathers."""
  height, width = ids.shape
  h, w = size
  if height % h or width % w or height // h != width // w:
    raise ValueError(
      f"mask2former_loss(num_points=0): labels {height}x{width} are not an integer "
      f"multiple (the same in both axes) of the {h}x{w} masks"
    )
  stride = height // h
  ids = jnp.where(semantic == ignore_label, _NO_ID, ids.astype(jnp.int32))
  starts = (stride // 2 - 1, stride // 2) if stride % 2 == 0 else (stride // 2,)
  taps = [ids[y::stride, x::stride] for y in starts for x in starts]
  hits = sum(
    ((tap[None] == segment_ids[:, None, None]) & valid[:, None, None]).astype(jnp.float32)
    for tap in taps
  )
  return hits / len(taps)


def _point_values(maps: jax.Array, points: jax.Array) -> jax.Array:
  """``maps`` ``[N,H,W]`` at ``points`` ``[P,2]`` (shared) or ``[N,P,2]`` → ``[N,P]``."""
  if points.ndim == 2:
    return bilinear_sample(maps.transpose(1, 2, 0)[None], points[None])[0].T
  return bilinear_sample(maps[..., None], points)[..., 0]


def match(
  class_logits,
  mask_logits,
  target,
  classes,
  valid,
  points,
  *,
  class_weight: float,
  mask_weight: float,
  dice_weight: float,
) -> jax.Array:
  """One image's assignment (transformers' ``Mask2FormerHungarianMatcher``): for each target the
  query minimising ``class_weight · (−p(class)) + mask_weight · sigmoid-CE + dice_weight · Dice``,
  the mask costs on the shared random ``points`` ``[P,2]``, where the targets' masks take the
  values ``target`` ``[T,P]``. Returns the query of each target ``[T]`` (-1 for padding)."""
  pred = _point_values(mask_logits.astype(jnp.float32), points)  # [Q, P]
  return _assign(
    class_logits,
    pred,
    target,
    classes,
    valid,
    class_weight=class_weight,
    mask_weight=mask_weight,
    dice_weight=dice_weight,
  )


def _assign(class_logits, pred, target, classes, valid, *, class_weight, mask_weight, dice_weight):
  """`match` on mask values already read: ``pred`` ``[Q,P]`` logits, ``target`` ``[T,P]``."""
  probs = jax.nn.softmax(class_logits.astype(jnp.float32), axis=-1)  # [Q, K+1]
  cost_class = -probs[:, classes]  # [Q, T]
  num_points = pred.shape[-1]
  cost_ce = (
    jax.nn.softplus(-pred) @ target.T + jax.nn.softplus(pred) @ (1 - target).T
  ) / num_points
  sig = jax.nn.sigmoid(pred)
  cost_dice = 1 - (2 * sig @ target.T + 1) / (sig.sum(-1)[:, None] + target.sum(-1)[None] + 1)
  cost = mask_weight * cost_ce + class_weight * cost_class + dice_weight * cost_dice
  return linear_sum_assignment(jax.lax.stop_gradient(cost).T, valid)


def uncertain_points(
  logits, key, num_points: int, oversample_ratio: float, importance_sample_ratio: float
) -> jax.Array:
  """PointRend's sampling of ``num_points`` per mask of ``logits`` ``[N,h,w]``: of
  ``oversample_ratio × num_points`` uniform points the ``importance_sample_ratio`` share with the
  logit nearest 0, the rest uniform → ``[N,P,2]``."""
  n = logits.shape[0]
  draw_key, random_key = jax.random.split(key)
  oversampled = int(num_points * oversample_ratio)
  candidates = jax.random.uniform(draw_key, (n, oversampled, 2))
  uncertainty = -jnp.abs(separable_point_values(logits, candidates))
  important = int(importance_sample_ratio * num_points)
  _, index = jax.lax.top_k(uncertainty, important)
  # x and y gathered apart: [N, M] arrays are ~14x cheaper to gather from on TPU than [N, M, 2]
  chosen = jnp.stack(
    [jnp.take_along_axis(candidates[..., d], index, axis=1) for d in (0, 1)], axis=-1
  )
  rest = jax.random.uniform(random_key, (n, num_points - important, 2))
  return jax.lax.stop_gradient(jnp.concatenate([chosen, rest], axis=1))


def prediction_loss(
  class_logits,
  mask_logits,
  segments,
  key,
  *,
  num_masks,
  ignore_label,
  class_weight,
  mask_weight,
  dice_weight,
  no_object_weight,
  num_points,
  oversample_ratio,
  importance_sample_ratio,
):
  """The loss of one decoder prediction over the batch: ``class_weight`` × the cross-entropy of
  every query's class (matched: its target's, else "no object" with weight
  ``no_object_weight``; PyTorch's weighted mean) + ``mask_weight`` × sigmoid-CE + ``dice_weight``
  × Dice of the matched masks on uncertainty-sampled points (every pixel with ``num_points=0``),
  summed over targets / ``num_masks``.
  ``segments`` = ``(ids, semantic, segment_ids, classes, valid)`` of the batch."""
  ids, semantic, segment_ids, classes, valid = segments
  batch, queries, num_labels = class_logits.shape
  match_key, point_key = jax.random.split(key)
  assign = functools.partial(
    _assign, class_weight=class_weight, mask_weight=mask_weight, dice_weight=dice_weight
  )
  if num_points == 0:  # dense: every pixel of the masks, no sampling (no gathers)
    dense_targets = jax.vmap(
      lambda i, s, g, v: segment_grid_values(i, g, v, mask_logits.shape[2:], ignore_label, s)
    )(ids, semantic, segment_ids, valid)
    dense_targets = dense_targets.reshape(batch, segment_ids.shape[1], -1)  # [B, T, h·w]
    pred = mask_logits.reshape(batch, queries, -1).astype(jnp.float32)
    assigned = jax.vmap(assign)(class_logits, pred, dense_targets, classes, valid)
  else:
    match_points = jax.random.uniform(match_key, (batch, num_points, 2))
    target_values = lambda points: jax.vmap(
      lambda i, s, g, v, p: segment_point_values(i, g, v, p, ignore_label, s)
    )(ids, semantic, segment_ids, valid, points)
    assigned = jax.vmap(
      lambda c, m, t, k, v, p: assign(c, _point_values(m.astype(jnp.float32), p), t, k, v)
    )(class_logits, mask_logits, target_values(match_points), classes, valid, match_points)
  query = jnp.where(valid, assigned, queries)  # padding points past the queries
  no_object = num_labels - 1
  target_class = jnp.full((batch, queries + 1), no_object, jnp.int32)
  target_class = jax.vmap(lambda t, q, c: t.at[q].set(c))(target_class, query, classes)[:, :queries]
  log_probs = jax.nn.log_softmax(class_logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_probs, target_class[..., None], axis=-1)[..., 0]
  weight = jnp.where(target_class == no_object, no_object_weight, 1.0)
  loss_class = jnp.sum(weight * nll) / jnp.sum(weight)

  matched = jnp.take_along_axis(
    mask_logits, jnp.clip(query, 0, queries - 1)[..., None, None], axis=1
  ).astype(jnp.float32)  # [B, T, h, w]
  flat = matched.reshape(-1, *matched.shape[2:])
  if num_points == 0:
    logits, labels = flat.reshape(flat.shape[0], -1), dense_targets.reshape(flat.shape[0], -1)
  else:
    points = uncertain_points(
      jax.lax.stop_gradient(flat), point_key, num_points, oversample_ratio, importance_sample_ratio
    )
    logits = separable_point_values(flat, points)  # [B·T, P]
    labels = target_values(points.reshape(batch, -1, *points.shape[1:])).reshape(logits.shape)
  ce = jnp.mean(jax.nn.softplus(logits) - logits * labels, axis=-1)
  probs = jax.nn.sigmoid(logits)
  dice = 1 - (2 * (probs * labels).sum(-1) + 1) / (probs.sum(-1) + labels.sum(-1) + 1)
  w = valid.reshape(-1).astype(jnp.float32)
  loss_mask = jnp.sum(ce * w) / num_masks
  loss_dice = jnp.sum(dice * w) / num_masks
  return class_weight * loss_class + mask_weight * loss_mask + dice_weight * loss_dice


@register_loss(takes_batch=True, kind="mask_classification")
def mask2former_loss(
  outputs,
  batch,
  *,
  output_key: str = "class_logits",
  target_key: str = "panoptic",
  ignore_label: int = 255,
  rng=None,
  max_targets: int = 100,
  class_weight: float = 2.0,
  mask_weight: float = 5.0,
  dice_weight: float = 5.0,
  no_object_weight: float = 0.1,
  num_points: int = 12544,
  oversample_ratio: float = 3.0,
  importance_sample_ratio: float = 0.75,
  deep_supervision: bool = True,
):
  """Mask2Former's loss (the paper's weights: class 2, mask 5, Dice 5, no-object 0.1; 12,544
  points, oversampling 3, importance 0.75) on ``outputs[output_key]`` and the ``mask_logits``
  beside it (``aux_class_logits``/``aux_mask_logits`` too with ``deep_supervision``), against
  the segments of ``batch[target_key]`` (`segment_targets`; classes from ``batch["semantic"]``).
  ``rng`` draws the sampled points (the trainer passes a key per step). ``num_points=0``: the
  matching costs and mask losses on every pixel of the masks instead of sampled points
  (MaskFormer's dense loss; the targets read by strided slices, `segment_grid_values`) — no
  gathers, which TPUs serve a tile at a time."""
  prefix = output_key[: -len("class_logits")] if output_key.endswith("class_logits") else ""
  if target_key not in batch or "semantic" not in batch:
    raise KeyError(
      f"mask2former_loss reads batch[{target_key!r}] and batch['semantic']; the "
      f"batch has {sorted(batch)}"
    )
  for key in ("class_logits", "mask_logits"):
    if prefix + key not in outputs:
      raise KeyError(
        f"mask2former_loss reads the model output {prefix + key!r}, which this "
        f"model does not return (it returns {sorted(outputs)})"
      )
  queries = outputs[prefix + "class_logits"].shape[1]
  if num_points < 0:
    raise ValueError(f"mask2former_loss: num_points={num_points} (0: every pixel of the masks)")
  if max_targets > queries:
    raise ValueError(
      f"mask2former_loss: max_targets={max_targets} exceeds the model's "
      f"{queries} queries (each target needs its own query)"
    )
  ids, semantic = batch[target_key], batch["semantic"]
  segment_ids, classes, valid = jax.vmap(
    lambda i, s: segment_targets(i, s, max_targets=max_targets, ignore_label=ignore_label)
  )(ids, semantic)
  segments = (ids, semantic, segment_ids, classes, valid)
  num_masks = jnp.maximum(valid.sum().astype(jnp.float32), 1.0)
  class_logits = outputs[prefix + "class_logits"][None]
  mask_logits = outputs[prefix + "mask_logits"][None]
  if deep_supervision and prefix + "aux_class_logits" in outputs:
    class_logits = jnp.concatenate([outputs[prefix + "aux_class_logits"], class_logits])
    mask_logits = jnp.concatenate([outputs[prefix + "aux_mask_logits"], mask_logits])
  key = jax.random.key(0) if rng is None else rng
  keys = jax.random.split(key, class_logits.shape[0])
  # every prediction matched and scored at once: one compiled matching for all of them
  losses = jax.vmap(
    lambda c, m, k: prediction_loss(
      c,
      m,
      segments,
      k,
      num_masks=num_masks,
      ignore_label=ignore_label,
      class_weight=class_weight,
      mask_weight=mask_weight,
      dice_weight=dice_weight,
      no_object_weight=no_object_weight,
      num_points=num_points,
      oversample_ratio=oversample_ratio,
      importance_sample_ratio=importance_sample_ratio,
    )
  )(class_logits, mask_logits, keys)
  return jnp.sum(losses)
