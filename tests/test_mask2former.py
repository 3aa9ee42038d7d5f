"""Mask2Former's parts against direct references: multi-scale deformable
attention against NumPy loops, the on-device assignment against SciPy, the targets, the loss and
the post-processors on hand-made cases. (Equality of the whole model with transformers:
tests/test_transformers_reference.py.)"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment as scipy_assignment

from segjax.data.descriptor import DatasetDescriptor
from segjax.losses import mask_classification as mc
from segjax.models import mask2former, sampling
from segjax.postprocess import Chain, panoptic
from test_sampling import grid_sample_loop


def test_ms_deform_attn_equals_a_loop_over_heads_levels_and_points():
  rng = np.random.default_rng(1)
  shapes, heads, dim, queries, points = [(4, 6), (2, 3)], 2, 3, 5, 3
  length = sum(h * w for h, w in shapes)
  value = rng.normal(size=(1, length, heads, dim)).astype(np.float32)
  where = rng.uniform(0, 1, size=(1, queries, heads, len(shapes), points, 2)).astype(np.float32)
  weights = rng.uniform(size=(1, queries, heads, len(shapes), points)).astype(np.float32)
  got = np.asarray(
    mask2former.ms_deform_attn(jnp.asarray(value), shapes, jnp.asarray(where), jnp.asarray(weights))
  )
  want = np.zeros((1, queries, heads, dim))
  start = 0
  for level, (h, w) in enumerate(shapes):
    maps = value[0, start : start + h * w].reshape(h, w, heads, dim)
    start += h * w
    for q in range(queries):
      for head in range(heads):
        sampled = grid_sample_loop(maps[None, :, :, head], where[:, q, head, level])[0]
        want[0, q, head] += (weights[0, q, head, level][:, None] * sampled).sum(0)
  np.testing.assert_allclose(got, want.reshape(1, queries, heads * dim), atol=1e-5)


def _ms_deform_attn_by_gathers(value, shapes, locations, weights):
  """The gather form `deformable.ms_deform_attn` replaced: each level's maps per head sampled
  with `sampling.bilinear_sample`, weighted and summed over levels and points."""
  batch, _, heads, dim = value.shape
  queries, points = locations.shape[1], locations.shape[4]
  out, start = 0.0, 0
  for level, (h, w) in enumerate(shapes):
    maps = value[:, start : start + h * w].transpose(0, 2, 1, 3).reshape(batch * heads, h, w, dim)
    start += h * w
    where = locations[:, :, :, level].transpose(0, 2, 1, 3, 4).reshape(batch * heads, -1, 2)
    sampled = sampling.bilinear_sample(maps, where).reshape(batch, heads, queries, points, dim)
    out = out + jnp.einsum(
      "bhnpd,bnhp->bnhd", sampled.astype(jnp.float32), weights[:, :, :, level].astype(jnp.float32)
    )
  return out.reshape(batch, queries, heads * dim)


@pytest.mark.slow
@pytest.mark.parametrize("dtype,tolerance", [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
def test_ms_deform_attn_equals_the_gather_form_in_values_and_gradients(dtype, tolerance):
  """The tap-table + mixing-matmul form (docs/models.md) against per-level gathers: values and
  the gradients of value, locations and weights, with locations inside, on the border and outside
  the maps, two images, unequal levels."""
  rng = np.random.default_rng(2)
  shapes, heads, dim, queries, points = [(5, 7), (3, 2), (1, 1)], 4, 8, 6, 2
  length = sum(h * w for h, w in shapes)
  value = jnp.asarray(rng.normal(size=(2, length, heads, dim)), dtype)
  where = rng.uniform(-0.15, 1.15, size=(2, queries, heads, len(shapes), points, 2))
  where[0, 0, 0, :, 0] = [0.0, 1.0]
  where[1, 1, 1, :, 1] = [1.0, 0.5]
  where = jnp.asarray(where, jnp.float32)
  weights = jnp.asarray(rng.uniform(size=(2, queries, heads, len(shapes), points)), jnp.float32)
  cotangent = jnp.asarray(rng.normal(size=(2, queries, heads * dim)), jnp.float32)

  def run(fn):
    loss = lambda v, l, w: jnp.sum(fn(v, shapes, l, w).astype(jnp.float32) * cotangent)
    return fn(value, shapes, where, weights), jax.grad(loss, argnums=(0, 1, 2))(
      value, where, weights
    )

  (got, got_grads), (want, want_grads) = (
    run(mask2former.ms_deform_attn),
    run(_ms_deform_attn_by_gathers),
  )
  assert got.dtype == dtype
  np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=0, atol=tolerance)
  for name, g, w in zip(("value", "locations", "weights"), got_grads, want_grads):
    scale = float(jnp.abs(w.astype(jnp.float32)).max())
    np.testing.assert_allclose(
      np.asarray(g, np.float32),
      np.asarray(w, np.float32),
      rtol=0,
      atol=tolerance * scale,
      err_msg=name,
    )


def test_sine_position_embedding_and_reference_points_by_hand():
  pos = mask2former.sine_position_embedding(2, 3, 4)
  y = 1 / (2 + 1e-6) * 2 * np.pi  # row 0, normalised
  x = 3 / (3 + 1e-6) * 2 * np.pi  # column 2
  dim_t = 10000 ** (2 * np.floor(np.arange(4) / 2) / 4)
  want_y = [np.sin(y / dim_t[0]), np.cos(y / dim_t[1]), np.sin(y / dim_t[2]), np.cos(y / dim_t[3])]
  want_x = [np.sin(x / dim_t[0]), np.cos(x / dim_t[1]), np.sin(x / dim_t[2]), np.cos(x / dim_t[3])]
  np.testing.assert_allclose(pos[0, 2], want_y + want_x, atol=1e-5)
  ref = mask2former.reference_points([(2, 2), (1, 1)])
  np.testing.assert_allclose(
    ref, [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75], [0.5, 0.5]]
  )


def test_segment_targets_one_per_id_classes_from_semantic_void_left_out():
  ids = np.array([[5, 5, 1007], [2001, 1007, 255255]], np.int32)
  semantic = np.array([[0, 0, 1], [2, 1, 255]], np.int32)
  segment_ids, classes, valid = jax.jit(
    functools.partial(mc.segment_targets, max_targets=4, ignore_label=255)
  )(ids, semantic)
  sample = jax.jit(mc.segment_point_values, static_argnums=4)
  np.testing.assert_array_equal(valid, [True, True, True, False])
  np.testing.assert_array_equal(segment_ids[:3], [5, 1007, 2001])
  np.testing.assert_array_equal(classes[:3], [0, 1, 2])
  # at the pixel centres the sampled masks are the binary masks; the void pixel is in none
  centres = np.array(
    [[(j + 0.5) / 3, (i + 0.5) / 2] for i in range(2) for j in range(3)], np.float32
  )
  values = np.asarray(sample(ids, segment_ids, valid, centres, 255, semantic))
  np.testing.assert_allclose(values.reshape(4, 2, 3)[1], [[0, 0, 1], [0, 1, 0]])
  assert values[3].sum() == 0 and values.sum() == 5
  # between pixels: bilinear, as grid_sample of the binary mask (and zero padding outside)
  masks = (ids[None] == np.array([5, 1007, 2001])[:, None, None]).astype(np.float32)
  points = np.random.default_rng(0).uniform(-0.1, 1.1, size=(30, 2)).astype(np.float32)
  values = np.asarray(sample(ids, segment_ids, valid, points, 255, semantic))
  want = grid_sample_loop(masks.transpose(1, 2, 0)[None], points[None])[0].T
  np.testing.assert_allclose(values[:3], want, atol=1e-5)
  # per-segment points ([T,P,2]) give the same values as shared ones
  per = np.asarray(
    sample(ids, segment_ids, valid, np.broadcast_to(points, (4, 30, 2)), 255, semantic)
  )
  np.testing.assert_allclose(per, values, atol=1e-6)


def test_match_equals_scipy_on_the_numpy_cost():
  rng = np.random.default_rng(3)
  queries, classes_n, targets = 6, 4, 3
  class_logits = rng.normal(size=(queries, classes_n + 1)).astype(np.float32)
  mask_logits = rng.normal(size=(queries, 4, 4)).astype(np.float32) * 3
  masks = (rng.random((targets + 1, 8, 8)) < 0.4).astype(np.float32)
  classes = np.array([1, 3, 0, 0])
  valid = np.array([True, True, True, False])
  points = rng.uniform(size=(50, 2)).astype(np.float32)
  target = grid_sample_loop(masks.transpose(1, 2, 0)[None], points[None])[0].T  # [T, P]
  got = jax.jit(functools.partial(mc.match, class_weight=2.0, mask_weight=5.0, dice_weight=5.0))(
    class_logits, mask_logits, target.astype(np.float32), classes, valid, points
  )
  pred = grid_sample_loop(mask_logits.transpose(1, 2, 0)[None], points[None])[0].T  # [Q, P]
  target = target[:3]
  probs = np.exp(class_logits) / np.exp(class_logits).sum(-1, keepdims=True)
  sig = 1 / (1 + np.exp(-pred))
  ce = -(np.log(sig) @ target.T + np.log(1 - sig) @ (1 - target).T) / 50
  dice = 1 - (2 * sig @ target.T + 1) / (sig.sum(-1)[:, None] + target.sum(-1)[None] + 1)
  cost = 5 * ce - 2 * probs[:, classes[:3]] + 5 * dice
  np.testing.assert_array_equal(np.asarray(got)[:3], scipy_assignment(cost.T)[1])
  assert int(got[3]) == -1


@pytest.mark.slow
def test_mask2former_loss_without_segments_is_the_no_object_cross_entropy():
  rng = np.random.default_rng(4)
  outputs = {
    "class_logits": rng.normal(size=(2, 5, 4)).astype(np.float32),
    "mask_logits": rng.normal(size=(2, 5, 4, 4)).astype(np.float32),
    "aux_class_logits": rng.normal(size=(2, 2, 5, 4)).astype(np.float32),
    "aux_mask_logits": rng.normal(size=(2, 2, 5, 4, 4)).astype(np.float32),
  }
  void = np.full((2, 8, 8), 255, np.int32)
  batch = {"panoptic": void, "semantic": void}
  loss = jax.jit(functools.partial(mc.mask2former_loss, max_targets=3, num_points=16))(
    outputs, batch
  )
  logits = np.concatenate([outputs["aux_class_logits"], outputs["class_logits"][None]])
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  want = sum(2.0 * -log_probs[i, ..., -1].mean() for i in range(3))  # class weight 2, 3 layers
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  shallow = jax.jit(
    functools.partial(mc.mask2former_loss, max_targets=3, num_points=16, deep_supervision=False)
  )(outputs, batch)
  np.testing.assert_allclose(float(shallow), 2.0 * -log_probs[2, ..., -1].mean(), rtol=1e-5)
  with pytest.raises(ValueError, match="max_targets=9 exceeds the model's 5 queries"):
    mc.mask2former_loss(outputs, batch, max_targets=9)


def test_mask2former_loss_is_invariant_to_the_order_of_the_queries():
  # one image, two segments (classes 0 and 2), queries 0 and 1 predict them confidently
  semantic = np.zeros((1, 8, 8), np.int32)
  semantic[0, :, 4:] = 2
  batch = {"panoptic": semantic * 1000, "semantic": semantic}
  class_logits = np.full((1, 3, 4), -20.0, np.float32)
  class_logits[0, 0, 0] = class_logits[0, 1, 2] = class_logits[0, 2, 3] = 20.0
  mask_logits = np.full((1, 3, 8, 8), -30.0, np.float32)
  mask_logits[0, 0, :, :4] = 30.0
  mask_logits[0, 1, :, 4:] = 30.0
  compiled = jax.jit(functools.partial(mc.mask2former_loss, max_targets=3, num_points=64))
  loss = lambda c, m: float(
    compiled({"class_logits": c, "mask_logits": m}, batch, rng=jax.random.key(0))
  )
  right = loss(class_logits, mask_logits)
  order = [2, 0, 1]  # the matching follows the queries wherever they are
  np.testing.assert_allclose(loss(class_logits[:, order], mask_logits[:, order]), right, rtol=1e-5)
  # the right masks with the classes swapped: each matched query pays -log p ≈ 40, class weight 2
  wrong = loss(class_logits[:, [1, 0, 2]], mask_logits)
  assert wrong - right > 2 * 40 * 0.9


def _descriptor():
  return DatasetDescriptor(
    "toy",
    ("road", "car", "person"),
    ((0, 0, 0), (1, 1, 1), (2, 2, 2)),
    thing_classes=(1, 2),
    stuff_classes=(0,),
  )


def test_mask_panoptic_by_hand():
  big = 12.0
  # 4 queries, 3 classes + no-object; masks 2x4
  class_logits = np.full((1, 4, 4), -big, np.float32)
  class_logits[0, 0, 0] = big  # road, left half
  class_logits[0, 1, 1] = big  # car, right column
  class_logits[0, 2, 0] = big  # road again (top right corner): merges into the road segment
  class_logits[0, 3, 3] = big  # no object: ignored
  mask = np.full((1, 4, 2, 4), -big, np.float32)
  mask[0, 0, :, :2] = big
  mask[0, 1, :, 3] = big
  mask[0, 2, 0, 2] = big
  mask[0, 3] = big
  got = panoptic.mask_classification_panoptic(
    jnp.asarray(class_logits),
    jnp.asarray(mask),
    size=(2, 4),
    thing_classes=(1, 2),
    label_divisor=1000,
    void_label=255,
  )
  np.testing.assert_array_equal(got[0], [[0, 0, 0, 1002], [0, 0, 255000, 1002]])
  # a low-confidence query is dropped (object threshold 0.8)
  unsure = class_logits.copy()
  unsure[0, 1] = [0.0, 0.5, 0.0, 0.0]
  got = panoptic.mask_classification_panoptic(
    jnp.asarray(unsure),
    jnp.asarray(mask),
    size=(2, 4),
    thing_classes=(1, 2),
    label_divisor=1000,
    void_label=255,
  )
  np.testing.assert_array_equal(got[0, :, 3], [255000, 255000])


def test_mask_instances_scores_and_the_chain():
  class_logits = np.log(
    np.array(
      [
        [0.6, 0.15, 0.05, 0.2],  # mostly road (stuff)
        [0.05, 0.8, 0.1, 0.05],
      ],  # car
      np.float32,
    )
  )
  mask = np.full((2, 2, 2), -8.0, np.float32)
  mask[1, 0] = [2.0, 0.0]  # positive logit on one pixel only
  out = panoptic.mask_classification_instances(
    class_logits, mask, size=(2, 2), thing_classes=(1, 2), label_divisor=1000, top_k=3
  )
  # thing (query, class) pairs by probability: (1, car) 0.8, (0, car) 0.15, (1, person) 0.1
  np.testing.assert_array_equal(out["classes"], [1, 1, 2])
  np.testing.assert_array_equal(out["masks"][0], [[True, False], [False, False]])
  np.testing.assert_allclose(out["scores"][0], 0.8 / (1 + np.exp(-2.0)), rtol=1e-4)
  assert out["ids"][0] == 1001 and len(out["scores"]) == 3
  # the registered chain on a batch of model outputs
  chain = Chain("argmax|mask_panoptic|mask_instances", _descriptor())
  predictions = {
    "class_logits": class_logits[None],
    "mask_logits": mask[None],
    "logits": np.zeros((1, 2, 2, 3), np.float32),
  }
  chain.check_outputs(predictions)
  result = chain(predictions)
  assert result["panoptic"].shape == (1, 2, 2) and len(result["instances"]) == 1
  with pytest.raises(KeyError, match="reads \\['class_logits', 'mask_logits'\\]"):
    chain.check_outputs({"logits": predictions["logits"]})


def test_torchvision_resnet_weights_load_into_the_mask2former_trunk():
  from conftest import ROOT  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel
  from segjax.models import Mask2Former, pretrained  # pylint: disable=import-outside-toplevel

  model = Mask2Former(
    num_classes=3,
    backbone="resnet18",
    width=4,
    feature_size=32,
    mask_feature_size=8,
    hidden_dim=8,
    num_queries=4,
    num_heads=2,
    encoder_layers=1,
    decoder_layers=1,
  )
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
  path = os.path.join(ROOT, "tests", "fixtures", "resnet18_w4.npz")
  loaded = pretrained.load_backbone(abstract, path, subtree=model.pretrained_subtree)
  trunk = loaded["params"]["model"]["pixel_level_module"]["encoder"]
  state = pretrained.read_state_dict(path)
  np.testing.assert_array_equal(
    trunk["conv1"]["kernel"], state["conv1.weight"].transpose(2, 3, 1, 0)
  )
  np.testing.assert_array_equal(
    trunk["layer2"]["0"]["downsample"]["0"]["kernel"],
    state["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0),
  )
  assert loaded["params"]["class_predictor"] == abstract["params"]["class_predictor"]  # untouched
  with pytest.raises(ValueError, match="has no 'backbone' to load"):
    pretrained.load_backbone(abstract, path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mask2former_coco", "segformer_cityscapes"])
def test_transformer_recipes_trace_their_train_step_and_evaluation(name):
  # A published recipe of each model at full size, traced without compiling (every recipe's plan
  # in docs/plans compiles it for TPU): pipeline shapes, model, loss terms against its outputs,
  # learning-rate groups against its parameters, the evaluation chain against its outputs.
  from conftest import load_config  # pylint: disable=import-outside-toplevel
  from segjax import evaluation, losses, models, optim, runs, sharding, train  # pylint: disable=import-outside-toplevel
  from segjax.data import pipeline  # pylint: disable=import-outside-toplevel

  config = load_config(name)
  info = pipeline.dataset_info(config.data)
  model = models.from_config(config.model, info.descriptor.num_classes)
  tx = optim.make_optimizer(config.optimizer, config.num_train_steps)
  objective = losses.Objective(
    losses.make_terms(config.get("loss"), config.get("losses")), info.descriptor.ignore_label
  )
  mesh = sharding.make_mesh(1)
  state = train.abstract_train_state(model, tx, runs.input_shape(config), mesh, 2**12)
  batch = pipeline.abstract_train_batch(config.data, info, 1)
  metric_terms = train.make_train_metrics(
    config, info.descriptor.num_classes, info.descriptor.ignore_label
  )
  sums = jax.eval_shape(
    lambda: train.zero_sums(model, objective, metric_terms, state.variables, batch)
  )
  step = train.make_train_step(model, tx, objective, metric_terms, mesh)
  new_state, _ = jax.eval_shape(step, state, sums, batch)
  assert jax.tree.map(lambda a: a.shape, new_state.params) == jax.tree.map(
    lambda a: a.shape, state.params
  )
  if config.model.name == "mask2former":
    evaluator = evaluation.Evaluator(
      model, config, info.descriptor, mesh, runs.input_shape(config), panoptic_labels=info.instances
    )
    assert [type(e).__name__ for e in evaluator.named[""]] == ["Semantic", "Panoptic", "MaskAP"]
  assert config.reference and set(sums.loss_sums) == {"loss", "loss/" + objective.terms[0].label}


@pytest.mark.slow
def test_remat_recomputes_every_encoder_and_decoder_layer_and_keeps_the_parameters():
  """``remat=True`` wraps each deformable encoder layer and each decoder layer in a checkpoint
  (its activations recomputed in the backward pass); the parameter tree is unchanged. (Values
  equal by construction of ``jax.checkpoint``; traced only, nothing compiled.)"""
  sizes = dict(
    num_classes=3,
    backbone="resnet18",
    width=4,
    blocks=(1, 1, 1, 1),
    feature_size=32,
    mask_feature_size=16,
    hidden_dim=16,
    num_queries=4,
    num_heads=4,
    encoder_layers=2,
    encoder_ffn=16,
    decoder_layers=3,
    decoder_ffn=16,
  )
  image = jnp.zeros((1, 64, 64, 3))
  plain, remat = mask2former.Mask2Former(**sizes), mask2former.Mask2Former(**sizes, remat=True)
  variables = jax.eval_shape(plain.init, jax.random.PRNGKey(0), image)
  assert jax.tree.structure(
    jax.eval_shape(remat.init, jax.random.PRNGKey(0), image)
  ) == jax.tree.structure(variables)
  variables = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), variables)

  def checkpoints(model):
    loss = lambda p: jnp.sum(model.apply({**variables, "params": p}, image)["mask_logits"])
    return str(jax.make_jaxpr(jax.grad(loss))(variables["params"])).count("remat2[")

  assert checkpoints(plain) == 0
  assert checkpoints(remat) == 2 + 3


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("feature_size", 48, "feature_size 48 must be a multiple of 32"),
    ("num_heads", 5, "feature_size 32 is not a multiple of num_heads 5"),
    ("common_stride", 2, "common_stride must be 4 or 8, not 2"),
  ],
)
def test_mask2former_refuses_sizes_it_cannot_build(field, value, message):
  sizes = dict(
    num_classes=3, backbone="resnet18", width=4, feature_size=32, hidden_dim=16, num_heads=4
  )
  model = mask2former.Mask2Former(**{**sizes, field: value})
  with pytest.raises(ValueError, match=message):
    jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))


@pytest.mark.parametrize("stride", [2, 3])
def test_segment_grid_values_are_the_point_values_at_the_mask_pixel_centres(stride):
  rng = np.random.default_rng(stride)
  h, w = 3, 4
  ids = rng.choice([7, 1003, 1004, 2000], size=(h * stride, w * stride)).astype(np.int32)
  semantic = np.where(rng.random(ids.shape) < 0.1, 255, ids // 1000).astype(np.int32)
  segment_ids, classes, valid = mc.segment_targets(
    jnp.asarray(ids), jnp.asarray(semantic), max_targets=5, ignore_label=255
  )
  grid = mc.segment_grid_values(
    jnp.asarray(ids), segment_ids, valid, (h, w), 255, jnp.asarray(semantic)
  )
  centres = np.array(
    [[(j + 0.5) / w, (i + 0.5) / h] for i in range(h) for j in range(w)], np.float32
  )
  points = mc.segment_point_values(
    jnp.asarray(ids), segment_ids, valid, centres, 255, jnp.asarray(semantic)
  )
  np.testing.assert_allclose(np.asarray(grid).reshape(5, -1), points, atol=1e-6)
  assert float(np.asarray(grid).sum(0).max()) <= 1  # a pixel is in one segment or void
  with pytest.raises(ValueError, match="labels 6x8 are not an integer multiple"):
    mc.segment_grid_values(
      jnp.zeros((6, 8), jnp.int32), segment_ids, valid, (4, 4), 255, jnp.zeros((6, 8), jnp.int32)
    )


def test_dense_mask2former_loss_by_hand():
  """``num_points=0``: matching and mask losses on every mask pixel, recomputed in NumPy."""
  rng = np.random.default_rng(5)
  semantic = np.zeros((1, 8, 8), np.int32)
  semantic[0, :, 5:] = 2
  semantic[0, 0, 0] = 255  # void: in no segment
  ids = np.where(semantic == 2, 2000, 0).astype(np.int32)
  class_logits = rng.normal(size=(1, 4, 4)).astype(np.float32)
  mask_logits = rng.normal(size=(1, 4, 4, 4)).astype(np.float32) * 2
  loss = jax.jit(functools.partial(mc.mask2former_loss, max_targets=3, num_points=0))(
    {"class_logits": class_logits, "mask_logits": mask_logits},
    {"panoptic": ids, "semantic": semantic},
  )
  # targets at the 4x4 mask pixels: the mean of each 2x2 block's membership
  targets = np.stack([(ids[0] == i) & (semantic[0] != 255) for i in (0, 2000)]).astype(float)
  targets = targets.reshape(2, 4, 2, 4, 2).mean((2, 4)).reshape(2, 16)
  pred = mask_logits[0].reshape(4, 16).astype(np.float64)
  sig = 1 / (1 + np.exp(-pred))
  probs = np.exp(class_logits[0]) / np.exp(class_logits[0]).sum(-1, keepdims=True)
  ce = -(np.log(sig) @ targets.T + np.log(1 - sig) @ (1 - targets).T) / 16
  dice = 1 - (2 * sig @ targets.T + 1) / (sig.sum(-1)[:, None] + targets.sum(-1)[None] + 1)
  cost = 5 * ce - 2 * probs[:, [0, 2]] + 5 * dice  # [Q, T]
  query = scipy_assignment(cost.T)[1]
  target_class = np.full(4, 3)
  target_class[query] = [0, 2]
  log_probs = np.log(probs)
  weight = np.where(target_class == 3, 0.1, 1.0)
  class_loss = -(weight * log_probs[np.arange(4), target_class]).sum() / weight.sum()
  want = 2 * class_loss + 5 * ce[query, [0, 1]].sum() / 2 + 5 * dice[query, [0, 1]].sum() / 2
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  with pytest.raises(ValueError, match="num_points=-1"):
    mc.mask2former_loss(
      {"class_logits": class_logits, "mask_logits": mask_logits},
      {"panoptic": ids, "semantic": semantic},
      num_points=-1,
    )


def test_mask2former_recipes_take_the_dense_loss_as_their_argument():
  from conftest import load_config  # pylint: disable=import-outside-toplevel
  from segjax import recipes  # pylint: disable=import-outside-toplevel

  for name in ("mask2former_ade20k", "mask2former_cityscapes", "mask2former_coco"):
    assert "num_points=12544" in load_config(name).losses[0][2]
    assert "num_points=0" in load_config(name + ":dense").losses[0][2]
  with pytest.raises(ValueError, match="loss 'sparse' is not 'points'"):
    recipes.mask2former_recipe(
      "tfds:coco_panoptic",
      crop_size=64,
      batch_size=1,
      num_train_steps=1,
      train_pp="",
      eval_pp="",
      target="panoptic",
      reference="",
      loss="sparse",
    )


def test_gather_lean_sampling_equals_the_gathers_in_values_and_gradients():
  """The loss's gather-lean forms (docs/models.md) against the gather formulation they replace:
  `separable_point_values` = `_point_values` (`bilinear_sample`: gathered taps) in values and
  gradients, points inside, on the border and outside; the uncertainty-sampled points and the
  target values at them = the gathers'."""
  rng = np.random.default_rng(0)
  maps = jnp.asarray(rng.normal(size=(5, 12, 20)), jnp.float32)
  points = jnp.asarray(rng.uniform(-0.1, 1.1, size=(5, 40, 2)), jnp.float32)
  points = points.at[:, 0].set(jnp.array([0.0, 1.0])).at[:, 1].set(jnp.array([1.0, 0.5]))
  np.testing.assert_allclose(
    sampling.separable_point_values(maps, points), mc._point_values(maps, points), rtol=0, atol=1e-5
  )
  weights = jnp.asarray(rng.normal(size=(5, 40)), jnp.float32)
  grad = lambda f: jax.grad(lambda m: jnp.sum(f(m, points) * weights))(maps)
  np.testing.assert_allclose(
    grad(sampling.separable_point_values), grad(mc._point_values), rtol=0, atol=1e-5
  )
  # PointRend's sampling with the gathers it had: the same points from the same key.
  key = jax.random.key(3)
  got = mc.uncertain_points(maps, key, 10, 3.0, 0.75)
  draw_key, random_key = jax.random.split(key)
  candidates = jax.random.uniform(draw_key, (5, 30, 2))
  _, top = jax.lax.top_k(-jnp.abs(mc._point_values(maps, candidates)), 7)
  expected = jnp.concatenate(
    [
      jnp.take_along_axis(candidates, top[..., None], axis=1),
      jax.random.uniform(random_key, (5, 3, 2)),
    ],
    axis=1,
  )
  np.testing.assert_array_equal(got, expected)
  # Target values: each segment's binary mask at its points, from rows of the id map.
  ids = jnp.asarray(rng.integers(0, 4, size=(12, 20)), jnp.int32)
  segments, valid = jnp.arange(4, dtype=jnp.int32), jnp.array([True, True, True, False])
  values = mc.segment_point_values(ids, segments, valid, points[:4], 255, ids)
  masks = (ids[None] == segments[:, None, None]) & valid[:, None, None]
  np.testing.assert_allclose(
    values, mc._point_values(masks.astype(jnp.float32), points[:4]), rtol=0, atol=1e-6
  )
