"""Segment Anything in Flax against transformers' ``SamModel``: a random-initialised checkpoint
(tests/fixtures/sam_tiny, written by tools/transformers_reference.py --only=sam) loaded by name
and by hub name, its image embeddings, masks and IoU predictions on every kind of prompt equal to
transformers' float64 outputs to float32 rounding, and the parameter counts of ViT-B/L/H."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax import models
from segjax.models import sam as sam_lib

from conftest import ROOT
from test_hub import MAIN, hub_cache, write_repo  # noqa: F401  (the hub_cache fixture)

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
TINY = os.path.join(FIXTURES, "sam_tiny")
CASES = ("points", "boxes", "points_boxes", "points_mask", "single")


@pytest.fixture(scope="module")
def tiny():
  model, variables = models.from_transformers("SamModel", TINY)
  return model, variables, np.load(os.path.join(FIXTURES, "sam_tiny_io.npz"))


def prompts(io, case):
  kwargs = {"multimask_output": bool(io[f"{case}/multimask_output"])}
  if f"{case}/input_points" in io:
    kwargs.update(points=io[f"{case}/input_points"], labels=io[f"{case}/input_labels"])
  if f"{case}/input_boxes" in io:
    kwargs["boxes"] = io[f"{case}/input_boxes"]
  if f"{case}/input_masks" in io:
    kwargs["masks"] = io[f"{case}/input_masks"][:, 0]  # [B, 1, 4h, 4w] in transformers
  return kwargs


@pytest.mark.slow
def test_sam_equals_transformers_on_every_prompt(tiny):
  model, variables, io = tiny
  embeddings = jax.jit(lambda v, x: model.apply(v, x, method=sam_lib.Sam.embed_image))(
    variables, io["image"]
  )
  np.testing.assert_allclose(embeddings, io["image_embeddings"], atol=2e-5)
  for case in CASES:
    kwargs = prompts(io, case)
    multimask = kwargs.pop("multimask_output")
    out = jax.jit(
      lambda v, e, k, m=multimask: model.apply(
        v, e, method=sam_lib.Sam.decode, multimask_output=m, **k
      )
    )(variables, embeddings, kwargs)
    # float32 rounding: within a few times torch's own float32 distance from float64.
    for key in ("pred_masks", "iou_scores"):
      reference = io[f"{case}/{key}"]
      torch_error = np.abs(io[f"{case}/{key}_torch_float32"] - reference).max()
      error = np.abs(np.asarray(out[key]) - reference).max()
      assert out[key].shape == reference.shape, (case, key)
      assert error <= 4 * torch_error + 1e-6, (case, key, error, torch_error)
  # The whole model in one call: the same masks.
  whole = model.apply(variables, io["image"], **prompts(io, "points_boxes"))
  np.testing.assert_allclose(whole["pred_masks"], io["points_boxes/pred_masks"], atol=5e-5)
  assert whole["pred_masks"].shape == (2, 2, 3, 32, 32) and whole["iou_scores"].shape == (2, 2, 3)


def test_padding_points_change_nothing_and_labels_default_to_positive(tiny):
  model, variables, io = tiny
  embeddings = io["image_embeddings"]
  points = jnp.array([[[[10.0, 20.0], [30.0, 40.0]]]])
  decode = lambda **k: model.apply(variables, embeddings[:1], method=sam_lib.Sam.decode, **k)
  positive = decode(points=points, labels=jnp.ones((1, 1, 2), jnp.int32))
  np.testing.assert_array_equal(decode(points=points)["pred_masks"], positive["pred_masks"])
  negative = decode(points=points, labels=jnp.array([[[1, 0]]]))
  assert np.abs(np.asarray(negative["pred_masks"] - positive["pred_masks"])).max() > 1e-3
  with pytest.raises(ValueError, match="give points"):
    decode()


def test_sam_by_hub_name_and_errors(tiny, hub_cache):  # noqa: F811
  write_repo(
    hub_cache[0],
    "facebook/sam-tiny",
    MAIN,
    {name: os.path.join(TINY, name) for name in os.listdir(TINY)},
  )
  model, by_name = models.from_pretrained("hf-hub:facebook/sam-tiny")
  jax.tree.map(np.testing.assert_array_equal, by_name, tiny[1])
  assert isinstance(model, sam_lib.Sam) and model.vision["image_size"] == 64
  with pytest.raises(ValueError, match=r"the image is 40x40; the model reads 64x64"):
    model.apply(by_name, jnp.zeros((1, 40, 40, 3)), method=sam_lib.Sam.embed_image)
  from segjax.models import pretrained  # pylint: disable=import-outside-toplevel

  weights = pretrained.read_state_dict(os.path.join(TINY, "model.safetensors"))
  weights.pop("mask_decoder.iou_prediction_head.proj_out.bias")
  with pytest.raises(
    ValueError, match=r"1 missing: mask_decoder.iou_prediction_head.proj_out.bias"
  ):
    config = json.load(open(os.path.join(TINY, "config.json")))
    models.from_transformers("sam", pretrained.Weights(weights, config, None))
  with pytest.raises(ValueError, match="variant='vit_s'"):
    models.create("sam", variant="vit_s")


def test_parameter_counts_equal_transformers():
  sizes = json.load(open(os.path.join(FIXTURES, "sam_sizes.json")))
  for variant in ("vit_b", "vit_l", "vit_h"):
    model = models.create("sam", variant=variant)
    abstract = jax.eval_shape(lambda m=model: sam_lib.init_variables(m, jax.random.key(0)))
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))
    assert count == sizes[variant], variant


def _write_disc_folder(root, count=4, size=64, seed=0):
  import cv2  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(seed)
  for sub in ("images", "masks", "instances"):
    os.makedirs(os.path.join(root, "train", sub), exist_ok=True)
  for i in range(count):
    instance = np.zeros((size, size), np.uint16)
    for k in range(1, 3):
      centre = tuple(int(v) for v in rng.integers(12, size - 12, 2))
      cv2.circle(instance, centre, int(rng.integers(6, 11)), k, -1)
    image = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
    image[instance > 0] += np.uint8(150)
    cv2.imwrite(os.path.join(root, "train", "images", f"{i}.png"), image)
    cv2.imwrite(os.path.join(root, "train", "masks", f"{i}.png"), (instance > 0).astype(np.uint8))
    cv2.imwrite(os.path.join(root, "train", "instances", f"{i}.png"), instance)


@pytest.mark.slow
def test_decoder_finetuning_on_a_folder_learns_and_saves_a_loadable_checkpoint(tiny, tmp_path):
  from segjax.interactive import predictor as interactive  # pylint: disable=import-outside-toplevel
  from segjax.interactive import sam_finetune  # pylint: disable=import-outside-toplevel

  model, variables, _ = tiny
  root = str(tmp_path / "discs")
  _write_disc_folder(root)
  tuned, history = sam_finetune.finetune(
    model, variables, root, steps=300, batch=8, learning_rate=1e-2, log_every=50, log=lambda _: None
  )
  assert len(history) == 6 and history[-1]["loss"] < 0.8 * history[0]["loss"]
  assert history[-1]["iou"] > history[0]["iou"] + 0.2
  # Only the mask decoder moved.
  for name, part in variables["params"].items():
    same = jax.tree.map(np.array_equal, part, tuned["params"][name])
    assert all(jax.tree.leaves(same)) == (name != "mask_decoder"), name
  # A click at each object's centre: the tuned decoder's masks overlap the objects better.
  saved = sam_finetune.save(model, tuned, str(tmp_path / "tuned"), like=TINY)
  before, after = interactive.load_predictor(TINY), interactive.load_predictor(saved)
  jax.tree.map(np.testing.assert_array_equal, after.variables, tuned)
  images, instances = sam_finetune.read_objects(root)
  ious = {"before": [], "after": []}
  for i in range(len(images)):
    path = os.path.join(root, "train", "images", f"{i}.png")
    for k in (1, 2):
      ys, xs = np.nonzero(instances[i] == k)
      click = [(float(xs.mean()), float(ys.mean()), True)]
      for name, p in (("before", before), ("after", after)):
        mask, truth = p.predict(path, click), instances[i] == k
        ious[name].append((mask & truth).sum() / max((mask | truth).sum(), 1))
  assert np.mean(ious["after"]) > max(0.5, np.mean(ious["before"]) + 0.2), ious
