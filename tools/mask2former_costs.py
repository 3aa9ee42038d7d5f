r"""XLA's TPU cost analysis (bytes accessed, FLOPs) of the parts of Mask2Former's COCO train step,
each compiled alone for one v5e chip (nothing runs; needs libtpu, pip install -e '.[plan]'):
the loss of one prediction (100 masks of 256x256, ids at 1024x1024, 12,544 points) and its
parts, and one deformable encoder layer's sampling (docs/models.md).

  python tools/mask2former_costs.py
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from segjax import plan  # noqa: E402
from segjax.losses import mask_classification as mc  # noqa: E402
from segjax.models import mask2former  # noqa: E402


def cost(fn, *args) -> str:
  sharding = jax.sharding.SingleDeviceSharding(plan.target("v5e:2x2").devices[0])
  args = [jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding) for a in args]
  analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
  analysis = analysis[0] if isinstance(analysis, list) else analysis
  return f"{analysis.get('bytes accessed', 0):.3g} bytes, {analysis.get('flops', 0):.3g} FLOPs"


def main():
  targets, points, side = 100, 12544, 256
  masks = jnp.zeros((targets, side, side), jnp.float32)
  ids = jnp.zeros((1024, 1024), jnp.int32)
  segments, valid = jnp.zeros((targets,), jnp.int32), jnp.ones((targets,), bool)
  per_mask = jnp.zeros((targets, points, 2), jnp.float32)
  rows = {
    "targets at each mask's 12,544 points": cost(
      lambda i, g, v, p: mc.segment_point_values(i, g, v, p, 255, i), ids, segments, valid, per_mask
    ),
    "targets at the matching's shared points": cost(
      lambda i, g, v, p: mc.segment_point_values(i, g, v, p, 255, i),
      ids,
      segments,
      valid,
      jnp.zeros((points, 2)),
    ),
    "uncertainty at 37,632 candidates per mask": cost(
      mc.separable_point_values, masks, jnp.zeros((targets, 3 * points, 2))
    ),
    "the 9,408 chosen candidates per mask (x or y)": cost(
      lambda c, i: jnp.take_along_axis(c, i, axis=1),
      jnp.zeros((targets, 3 * points)),
      jnp.zeros((targets, 9408), jnp.int32),
    ),
    "mask logits at the points, forward + backward": cost(
      lambda m, p: jax.grad(lambda m: mc.separable_point_values(m, p).sum())(m), masks, per_mask
    ),
    "segment targets of the id map (once per step)": cost(
      lambda i: mc.segment_targets(i, i, max_targets=targets, ignore_label=255), ids
    ),
  }

  def loss(class_logits, mask_logits, panoptic):
    segs = jax.vmap(lambda i, s: mc.segment_targets(i, s, max_targets=targets, ignore_label=255))(
      panoptic, panoptic
    )
    one = lambda c, m: mc.prediction_loss(
      c,
      m,
      (panoptic, panoptic, *segs),
      jax.random.key(0),
      num_masks=1.0,
      ignore_label=255,
      class_weight=2.0,
      mask_weight=5.0,
      dice_weight=5.0,
      no_object_weight=0.1,
      num_points=points,
      oversample_ratio=3.0,
      importance_sample_ratio=0.75,
    )
    return jax.grad(one, argnums=(0, 1))(class_logits, mask_logits)

  rows["one prediction's loss, forward + backward (with the segment targets)"] = cost(
    loss,
    jnp.zeros((1, targets, 134)),
    jnp.zeros((1, targets, side, side), jnp.bfloat16),
    jnp.zeros((1, 1024, 1024), jnp.int32),
  )

  shapes = [(128, 128), (64, 64), (32, 32)]
  tokens = sum(h * w for h, w in shapes)
  attend = lambda v, l, w: mask2former.ms_deform_attn(v, shapes, l, w)
  rows["one encoder layer's deformable sampling, forward + backward"] = cost(
    lambda v, l, w: jax.grad(
      lambda v, l, w: attend(v, l, w).astype(jnp.float32).sum(), argnums=(0, 1, 2)
    )(v, l, w),
    jnp.zeros((1, tokens, 8, 32), jnp.bfloat16),
    jnp.zeros((1, tokens, 8, 3, 4, 2)),
    jnp.zeros((1, tokens, 8, 3, 4)),
  )
  attention = mask2former.MultiScaleDeformableAttention(dim=256, heads=8, dtype=jnp.bfloat16)
  reference = jnp.repeat(jnp.asarray(mask2former.reference_points(shapes))[None, :, None], 3, 2)
  x = jnp.zeros((1, tokens, 256), jnp.bfloat16)
  params, tree = jax.tree.flatten(
    jax.eval_shape(lambda: attention.init(jax.random.key(0), x, x, reference, shapes))
  )

  def attention_grads(*args):
    loss = lambda p, q, v: (
      attention.apply(jax.tree.unflatten(tree, p), q, v, reference, shapes)
      .astype(jnp.float32)
      .sum()
    )
    return jax.grad(loss, argnums=(0, 1, 2))(list(args[:-2]), *args[-2:])

  rows["one encoder layer's deformable attention (projections included), forward + backward"] = (
    cost(attention_grads, *params, x, x)
  )
  print("| part (one image, one v5e chip) | cost |\n|---|---:|")
  for name, value in rows.items():
    print(f"| {name} | {value} |")


if __name__ == "__main__":
  main()
