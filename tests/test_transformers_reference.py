"""SegFormer against Hugging Face transformers, without PyTorch: the fixtures of
tools/transformers_reference.py (a tiny SegformerForSemanticSegmentation's config.json and
model.safetensors, an input and transformers' eval-mode logits) and transformers' parameter counts
of MiT-B0 and B5 at 150 classes."""
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


def test_segformer_parameter_counts_equal_transformers():
  with open(os.path.join(FIXTURES, "segformer_sizes.json"), encoding="utf-8") as f:
    sizes = json.load(f)
  for variant in ("b0", "b5"):
    model = models.create("segformer", num_classes=150, variant=variant)
    shapes = jax.eval_shape(lambda m=model: m.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    assert models.count_params(shapes["params"]) == sizes[variant], variant


def test_segformer_from_transformers_equals_its_logits():
  model, variables = models.from_transformers("segformer", TINY)
  assert (model.hidden_sizes, model.depths, model.num_heads, model.decoder_hidden_size,
          model.num_classes) == ((8, 16, 24, 32), (1, 2, 1, 1), (1, 2, 3, 4), 16, 5)
  io = np.load(os.path.join(FIXTURES, "segformer_tiny_io.npz"))
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, io["image"])
  # float32 rounding: segjax's error against the float64 reference is of the order of
  # transformers' own float32 error
  torch_error = np.abs(io["logits_torch_float32"] - io["logits"]).max()
  assert np.abs(io["logits"]).max() > 1.0  # unit-gain weights: logits of order 1
  np.testing.assert_allclose(out["logits_4x"], io["logits"], rtol=0, atol=max(5 * torch_error, 1e-6))
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
  with pytest.raises(ValueError, match=r"decode_head\.classifier\.bias: file \(7,\) vs model \(5,\)"):
    models.from_transformers("segformer", wrong, **heads)
  with pytest.raises(ValueError, match="no transformers conversion for 'bert'"):
    models.from_transformers("bert", TINY)
  with pytest.raises(ValueError, match="not a SegformerForSemanticSegmentation state dict"):
    models.from_transformers("segformer", {"x.weight": np.zeros(2)})


def test_a_tiny_segformer_trains_with_the_trainers_step(config):
  # train.setup builds it from config.model like any model; the trainer's own compiled step
  # (objective, optimizer, stochastic depth from the trainer's dropout key) lowers the loss.
  from segjax import sharding
  from segjax import train
  from segjax.data import pipeline
  config.model = dict(name="segformer", hidden_sizes=(8, 16), depths=(1, 1), num_heads=(1, 2),
                      sr_ratios=(2, 1), decoder_hidden_size=8, drop_path_rate=0.2,
                      dtype="float32")  # two stages: the smallest program that has every part
  config.num_devices = 1
  trainer = train.setup(config)
  ds = pipeline.train_dataset(trainer.source, config.data, local_batch_size=4, seed=0)
  batch = sharding.global_batch(next(pipeline.as_numpy(ds)), trainer.mesh)
  step, state, names = trainer.train_step(), trainer.state, trainer.term_names(batch)
  losses = []
  for _ in range(4):  # the same batch: the loss must fall
    sums = jax.device_put(train.MetricSums.zeros(names, 5), sharding.replicated(trainer.mesh))
    state, sums = step(state, sums, batch)
    losses.append(float(sums.loss_sums["loss"]))
  assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
