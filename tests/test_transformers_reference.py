"""SegFormer and Mask2Former against Hugging Face transformers, without PyTorch: the fixtures of
tools/transformers_reference.py (a tiny SegformerForSemanticSegmentation's and a tiny
Mask2FormerForUniversalSegmentation's config.json and model.safetensors, inputs and transformers'
eval-mode outputs) and transformers' parameter counts of MiT-B0 and B5 at 150 classes."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import ROOT
from segjax import models

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
TINY = os.path.join(FIXTURES, "segformer_tiny")
M2F_TINY = os.path.join(FIXTURES, "mask2former_tiny")


def test_segformer_parameter_counts_equal_transformers():
  with open(os.path.join(FIXTURES, "segformer_sizes.json"), encoding="utf-8") as f:
    sizes = json.load(f)
  for variant in ("b0", "b5"):
    model = models.create("segformer", num_classes=150, variant=variant)
    shapes = jax.eval_shape(lambda m=model: m.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    assert models.count_params(shapes["params"]) == sizes[variant], variant


def test_segformer_from_transformers_equals_its_logits():
  model, variables = models.from_transformers("segformer", TINY)
  assert (
    model.hidden_sizes,
    model.depths,
    model.num_heads,
    model.decoder_hidden_size,
    model.num_classes,
  ) == ((8, 16, 24, 32), (1, 2, 1, 1), (1, 2, 3, 4), 16, 5)
  io = np.load(os.path.join(FIXTURES, "segformer_tiny_io.npz"))
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, io["image"])
  # float32 rounding: segjax's error against the float64 reference is of the order of
  # transformers' own float32 error
  torch_error = np.abs(io["logits_torch_float32"] - io["logits"]).max()
  assert np.abs(io["logits"]).max() > 1.0  # unit-gain weights: logits of order 1
  np.testing.assert_allclose(
    out["logits_4x"], io["logits"], rtol=0, atol=max(5 * torch_error, 1e-6)
  )
  assert out["logits"].shape == io["image"].shape[:3] + (5,)


def test_from_transformers_lists_missing_and_left_over_tensors(tmp_path):
  state = load_file(os.path.join(TINY, "model.safetensors"))
  with pytest.raises(ValueError, match=r"not multiples of the attention heads \(1, 2, 5, 8\)"):
    models.from_transformers("segformer", state)  # a bare state dict: MiT's heads by default
  heads = dict(num_heads=(1, 2, 3, 4))
  models.from_transformers("segformer", state, **heads)
  missing = {k: v for k, v in state.items() if k != "decode_head.linear_fuse.weight"}
  with pytest.raises(ValueError, match=r"1 missing: decode_head\.linear_fuse\.weight"):
    models.from_transformers("segformer", missing, **heads)
  extra = dict(state, **{"segformer.encoder.extra.weight": np.zeros(3, np.float32)})
  with pytest.raises(ValueError, match=r"1 left over: segformer\.encoder\.extra\.weight"):
    models.from_transformers("segformer", extra, **heads)
  wrong = dict(state)
  wrong["decode_head.classifier.bias"] = np.zeros(7, np.float32)
  with pytest.raises(
    ValueError, match=r"decode_head\.classifier\.bias: file \(7,\) vs model \(5,\)"
  ):
    models.from_transformers("segformer", wrong, **heads)
  with pytest.raises(ValueError, match="no transformers conversion for 'bert'"):
    models.from_transformers("bert", TINY)
  with pytest.raises(ValueError, match="not a SegformerForSemanticSegmentation state dict"):
    models.from_transformers("segformer", {"x.weight": np.zeros(2)})


def test_a_transformers_checkpoint_initialises_the_segformer_encoder():
  from segjax.models import pretrained  # pylint: disable=import-outside-toplevel

  model = models.create(
    "segformer",
    num_classes=3,
    hidden_sizes=(8, 16, 24, 32),
    depths=(1, 2, 1, 1),
    num_heads=(1, 2, 3, 4),
    decoder_hidden_size=16,
  )
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
  loaded = pretrained.load_transformers_encoder(abstract, TINY)  # the head (5 classes) ignored
  state = load_file(os.path.join(TINY, "model.safetensors"))
  np.testing.assert_array_equal(
    loaded["params"]["segformer"]["encoder"]["block_1_1"]["attention"]["self"]["query"]["kernel"],
    state["segformer.encoder.block.1.1.attention.self.query.weight"].T,
  )
  assert loaded["params"]["decode_head"] == abstract["params"]["decode_head"]  # untouched
  assert model.pretrained_format == "transformers"
  unet = {"params": {"encoder": {"kernel": jnp.zeros((3, 3))}}}
  with pytest.raises(ValueError, match="the model has no 'segformer' to load .*segformer_tiny"):
    pretrained.load_transformers_encoder(unet, TINY)


def train_on_one_batch(config, steps: int = 4):
  """``(trainer, state, losses)`` of ``steps`` steps of the trainer's own compiled step on one
  batch of ``config`` (one device)."""
  from segjax import sharding  # pylint: disable=import-outside-toplevel
  from segjax import train  # pylint: disable=import-outside-toplevel
  from segjax.data import pipeline  # pylint: disable=import-outside-toplevel

  config.num_devices = 1
  trainer = train.setup(config)
  ds = pipeline.train_dataset(trainer.source, config.data, local_batch_size=4, seed=0)
  batch = sharding.global_batch(next(pipeline.as_numpy(ds)), trainer.mesh)
  step, state = trainer.train_step(), trainer.state
  losses = []
  for _ in range(steps):  # the same batch: the loss must fall
    sums = trainer.zero_sums(batch)
    state, sums = step(state, sums, batch)
    losses.append(float(sums.loss_sums["loss"]))
  return trainer, state, losses


@pytest.mark.slow
def test_a_tiny_segformer_trains_with_the_trainers_step(config):
  # train.setup builds it from config.model like any model; the trainer's own compiled step
  # (objective, optimizer, stochastic depth from the trainer's dropout key) lowers the loss.
  config.model = dict(
    name="segformer",
    hidden_sizes=(8, 16),
    depths=(1, 1),
    num_heads=(1, 2),
    sr_ratios=(2, 1),
    decoder_hidden_size=8,
    drop_path_rate=0.2,
    dtype="float32",
  )  # two stages: the smallest program that has every part
  _, _, losses = train_on_one_batch(config)
  assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses


@pytest.mark.slow
def test_mask2former_from_transformers_equals_every_prediction():
  model, variables = models.from_transformers("Mask2FormerForUniversalSegmentation", M2F_TINY)
  assert (
    model.backbone,
    model.width,
    tuple(model.blocks),
    model.feature_size,
    model.hidden_dim,
    model.mask_feature_size,
    model.num_queries,
    model.num_heads,
    model.encoder_layers,
    model.decoder_layers,
    model.num_classes,
  ) == ("resnet18", 4, (2, 1, 1, 1), 32, 16, 16, 6, 4, 2, 3, 5)
  io = np.load(os.path.join(FIXTURES, "mask2former_tiny_io.npz"))
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, io["image"])
  classes = np.concatenate([out["aux_class_logits"], out["class_logits"][None]])
  masks = np.concatenate([out["aux_mask_logits"], out["mask_logits"][None]])
  assert classes.shape == io["class_logits"].shape and masks.shape == io["mask_logits"].shape
  assert np.abs(io["mask_logits"]).max() > 3.0  # unit-gain weights: logits of order 1-10
  for ours, theirs, key in (
    (classes, io["class_logits"], "class_logits"),
    (masks, io["mask_logits"], "mask_logits"),
  ):
    torch_error = np.abs(io[key + "_torch_float32"] - theirs[-1]).max()
    # float32 rounding: of the order of transformers' own float32 error, in every prediction
    # (the masked attention of each layer depends on the masks of the one before)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=max(5 * torch_error, 1e-5))
  assert out["logits"].shape == io["image"].shape[:3] + (5,)


@pytest.mark.slow
def test_mask2former_parameter_count_equals_transformers():
  with open(os.path.join(FIXTURES, "mask2former_sizes.json"), encoding="utf-8") as f:
    sizes = json.load(f)
  model = models.create("mask2former", num_classes=133)  # ResNet-50, the paper's sizes
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
  assert models.count_params(shapes["params"]) == sizes["resnet50_coco"] == 44_036_998
  # Its variables written under their transformers names and in PyTorch's layouts (zeros) load
  # back through from_transformers: every tensor found by name and shape (the bottleneck
  # ResNet-50's stacked blocks included), the sizes read from the shapes.
  from segjax.models import mask2former_weights  # pylint: disable=import-outside-toplevel
  from segjax.models import pretrained  # pylint: disable=import-outside-toplevel

  zeros = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes)
  state = pretrained.to_state_dict(zeros, key=mask2former_weights.hf_key)
  loaded, variables = models.from_transformers("mask2former", state)
  assert (
    loaded.backbone,
    loaded.blocks,
    loaded.num_queries,
    loaded.num_classes,
    loaded.encoder_layers,
    loaded.decoder_layers,
    loaded.num_heads,
  ) == ("resnet50", (3, 4, 6, 3), 100, 133, 6, 9, 8)
  assert jax.tree.map(np.shape, variables) == jax.tree.map(np.shape, zeros)


def test_mask2former_from_transformers_errors():
  state = load_file(os.path.join(M2F_TINY, "model.safetensors"))
  model, _ = models.from_transformers("mask2former", state)  # heads from the tensors' shapes
  assert model.num_heads == 4
  heads = dict(num_heads=4)
  with pytest.raises(ValueError, match="feature_size 32 is not a multiple of num_heads 3"):
    models.from_transformers("mask2former", state, num_heads=3)
  missing = {k: v for k, v in state.items() if not k.endswith("level_embed")}
  with pytest.raises(
    ValueError, match=r"1 missing: model\.pixel_level_module\.decoder\.level_embed"
  ):
    models.from_transformers("mask2former", missing, **heads)
  swin = {k: v for k, v in state.items() if "embedder.embedder.convolution" not in k}
  with pytest.raises(ValueError, match="backbone is not a ResNet"):
    models.from_transformers("mask2former", swin, **heads)
  with pytest.raises(ValueError, match="not a Mask2FormerForUniversalSegmentation state dict"):
    models.from_transformers("mask2former", {"x.weight": np.zeros(2)})


@pytest.mark.slow
def test_a_tiny_mask2former_trains_and_evaluates_through_the_trainer(config):
  # from config.model and config.losses like any model: the trainer's compiled step (matching on
  # the device, deep supervision, the step's sampling key) lowers the loss on one batch; the
  # evaluator's chain gives mIoU, PQ and mask AP.
  config.model = dict(
    name="mask2former",
    backbone="resnet18",
    width=4,
    blocks=(1, 1, 1, 1),
    feature_size=32,
    mask_feature_size=8,
    hidden_dim=8,
    num_queries=8,
    num_heads=2,
    encoder_layers=1,
    encoder_ffn=16,
    decoder_layers=1,
    decoder_ffn=16,
    dtype="float32",
  )  # one decoder layer: two predictions
  config.loss = ""
  config.losses = (
    ("class_logits", "panoptic", "mask2former_loss(max_targets=8, num_points=64)", 1.0),
  )
  config.postprocess = "argmax|mask_panoptic(object_threshold=0.0)|mask_instances"
  config.train_metrics = ("mask_confusion",)  # no full-resolution "logits" in training
  config.optimizer.learning_rate = 3e-3
  trainer, state, losses = train_on_one_batch(config)
  assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
  result = trainer.evaluator().evaluate(state.variables, trainer.source, "validation")
  assert 0.0 <= result["pq"] <= 1.0 and 0.0 <= result["mean_iou"] <= 1.0, result
  assert "mask_ap" in result
