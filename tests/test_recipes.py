"""Every benchmark recipe trains two real steps and evaluates one batch through the ordinary
trainer, at its own crop size and with its own pipeline, on tfds.testing.mock_data (scenes of the
built-in dataset in each dataset's raw format, 48x96 pixels: the training pipeline scales and
pads them to the recipe's crop) or, for the folder recipe, on files written here. Only the widths
and depths are reduced, and the batch to one example on one device, so that CI can run it.

Each recipe runs in a child process on one CPU device, so that the memory of its large crops
(up to 5.6 GB for HMSA's 1024x2048) is returned when it ends."""

import contextlib
import json
import os
import subprocess
import sys
from unittest import mock

import cv2
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from segjax import train
from segjax.data import pipeline
from segjax.data import shapes
from segjax.data import stream

from conftest import load_config, records_of_mock_data, xla_flags

# Narrower, shallower models: the architecture (block kind, strides, dilations, multi-grid, heads),
# crop and pipeline stay the recipe's; the ResNet stages hold 1, 1, 2 and 3 blocks.
BLOCKS = (1, 1, 2, 3)
NARROW = {
  "deeplabv3": dict(width=4, blocks=BLOCKS, aspp_features=16),
  "deeplabv3plus": dict(
    width=4, blocks=BLOCKS, aspp_features=16, low_level_features=8, decoder_features=16
  ),
  "panoptic_deeplab": dict(
    width=4,
    blocks=BLOCKS,
    aspp_features=16,
    semantic_features=16,
    instance_features=8,
    semantic_head_features=16,
    instance_head_features=8,
  ),
  "unet": dict(features=4),
}
RECIPES = [
  "deeplabv3_cityscapes",
  "deeplabv3plus_cityscapes",
  "deeplabv3_ade20k",
  "deeplabv3_voc",
  "hmsa_cityscapes",
  "panoptic_deeplab_cityscapes",
  "panoptic_deeplab_coco",
  "unet_microscopy",
]


def _narrow(config):
  model = config.model
  model.dtype = "float32"  # XLA:CPU emulates bfloat16 convolutions slowly; test_train covers bf16
  if model.name == "hmsa":
    model.trunk_kwargs.update(NARROW[model.trunk])
    model.attention_features = 8
  else:
    model.update(NARROW[model.name])


# Scenes of the built-in dataset in each catalogue dataset's own raw format: the shapes classes
# (stripes, speckle, disc, triangle, square) become classes of that dataset.
CITYSCAPES_IDS = (7, 11, 24, 26, 33)  # road, building, person, car, bicycle (label ids)
RAW_CLASSES = {
  "scene_parse150": (1, 2, 13, 21, 3),
  "voc": (0, 15, 12, 7, 3),
  "coco_panoptic": (100, 120, 0, 2, 5),
}  # stuff ids >= 80, things < 80


def _raw_example(name, rng, size=(48, 96)):
  image, semantic, instance = shapes.render_scene(rng, max(size), 3)
  image, semantic = image[: size[0], : size[1]], semantic[: size[0], : size[1]].astype(np.int64)
  instance = instance[: size[0], : size[1]].astype(np.int64)
  if name == "cityscapes":
    return {
      "image_left": image,
      "segmentation_label": np.take(CITYSCAPES_IDS, semantic)[..., None].astype(np.uint8),
    }
  if name == "cityscapes_panoptic":
    label = np.take(CITYSCAPES_IDS, semantic)
    ids = np.where(instance > 0, label * 1000 + instance - 1, label)
    return {"image_left": image, "instance_ids": ids[..., None].astype(np.uint16)}
  mapped = np.take(RAW_CLASSES[name], semantic)
  if name == "scene_parse150":
    return {"image": image, "annotation": np.repeat(mapped[..., None], 3, -1).astype(np.uint8)}
  if name == "voc":
    return {"image": image, "segmentation": mapped[..., None].astype(np.uint8)}
  # coco_panoptic: one segment per thing instance and per stuff class, ids as RGB.
  segment = np.where(instance > 0, 1000 + instance, 10 + semantic)
  ids = np.unique(segment)
  labels = [int(mapped[segment == i][0]) for i in ids]
  rgb = np.stack([segment % 256, segment // 256 % 256, segment // 65536], -1).astype(np.uint8)
  return {
    "image": image,
    "panoptic_image": rgb,
    "panoptic_objects": {
      "id": ids.astype(np.int64),
      "label": np.array(labels, np.int64),
      "is_crowd": np.zeros(len(ids), bool),
    },
  }


def _fake_dataset(name, count=2):
  """``_as_dataset`` for tfds.testing.mock_data: ``count`` scenes in ``name``'s raw format (one
  in evaluation splits: one evaluation batch)."""

  def as_dataset(builder, split=None, *args, **kwargs):
    del builder, args, kwargs
    count_ = count if str(split).startswith("train") else 1
    examples = [_raw_example(name, np.random.default_rng(i)) for i in range(count_)]
    signature = tf.nest.map_structure(
      lambda x: tf.TensorSpec((None,) * x.ndim, tf.as_dtype(x.dtype)), examples[0]
    )
    ds = tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=signature)
    return ds.apply(tf.data.experimental.assert_cardinality(count_))

  return as_dataset


def _write_microscopy_folder(root):
  """Two training frames and one validation frame: 16-bit grey, bright blobs on a dim
  background, with their masks."""
  rng = np.random.default_rng(0)
  for split, count in (("train", 2), ("val", 1)):
    for sub in ("images", "masks"):
      os.makedirs(os.path.join(root, split, sub), exist_ok=True)
    for i in range(count):
      mask = np.zeros((300, 380), np.uint8)
      for _ in range(6):
        cv2.circle(
          mask, tuple(int(v) for v in rng.integers(20, 280, 2)), int(rng.integers(8, 20)), 1, -1
        )
      image = 400 + 3000 * mask.astype(np.float64) + rng.normal(0, 100, mask.shape)
      image = image.clip(0, 65535).astype(np.uint16)
      cv2.imwrite(os.path.join(root, split, "images", f"{split}_{i}.tif"), image)
      cv2.imwrite(os.path.join(root, split, "masks", f"{split}_{i}.png"), mask)


def run_recipe(name, tmp_path):
  """Two training steps and the evaluation of recipe ``name`` (narrowed) in ``tmp_path``/run; writes
  ``tmp_path``/labelled.json, the number of labelled pixels of the evaluation split."""
  config = load_config(name)
  _narrow(config)
  config.update(
    dict(
      num_devices=1,
      batch_size=1,
      eval_batch_size=1,
      num_train_steps=2,
      log_every_steps=1,
      checkpoint_every_steps=2,
    )
  )
  config.data.data_dir = os.path.join(tmp_path, "tfds")
  if config.data.name == "folder":
    config.data.root = os.path.join(tmp_path, "frames")
    _write_microscopy_folder(config.data.root)
    data = contextlib.nullcontext()
  else:
    # tfds.testing.mock_data swaps in a mock file system (process-wide) during every as_dataset
    # call; an asynchronous checkpoint write still in flight would write into it.
    config.checkpoint_async = False
    data = contextlib.ExitStack()
    data.enter_context(
      mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    )
    data.enter_context(mock.patch.object(stream, "ensure_index", lambda b: b))
    data.enter_context(mock.patch.object(stream, "records", records_of_mock_data))
    data.enter_context(
      tfds.testing.mock_data(as_dataset_fn=_fake_dataset(config.data.name[len("tfds:") :]))
    )
  with data:
    train.train_and_evaluate(config, os.path.join(tmp_path, "run"))
    ds, _ = pipeline.eval_dataset(
      pipeline.get_source(config.data), config.data, config.eval_splits[0], local_batch_size=1
    )
    labelled = sum(
      int(np.sum((b["semantic"] != 255) & b["valid"][:, None, None])) for b in pipeline.as_numpy(ds)
    )
  with open(os.path.join(tmp_path, "labelled.json"), "w") as f:
    json.dump({"split": config.eval_splits[0], "labelled": labelled}, f)


# Two child processes (one start-up of TensorFlow and JAX each), one per test worker.
GROUPS = [
  ("deeplabv3_voc", "deeplabv3_ade20k", "deeplabv3_cityscapes", "deeplabv3plus_cityscapes"),
  ("hmsa_cityscapes", "panoptic_deeplab_cityscapes", "panoptic_deeplab_coco", "unet_microscopy"),
]
assert sorted(sum(GROUPS, ())) == sorted(RECIPES)


@pytest.mark.slow
@pytest.mark.parametrize("names", GROUPS, ids=["deeplab", "hmsa+panoptic+unet"])
def test_recipe_trains_and_evaluates_at_its_crop_size(names, tmp_path):
  env = dict(os.environ, XLA_FLAGS=xla_flags(1))
  result = subprocess.run(
    [sys.executable, __file__, str(tmp_path), *names],
    env=env,
    capture_output=True,
    text=True,
    timeout=2400,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  for name in names:
    config, out = load_config(name), tmp_path / name
    evaluated = json.load(open(out / "labelled.json"))
    summary = json.load(open(out / "run" / "final_metrics.json"))[evaluated["split"]]
    # Every labelled pixel of the evaluation image scored exactly once (padding to the recipe's
    # evaluation size included).
    assert sum(map(sum, summary["confusion_matrix"])) == evaluated["labelled"] > 0, name
    assert 0.0 <= summary["pixel_accuracy"] <= 1.0
    if "panoptic_deeplab" in name:
      assert "pq" in summary and "ap" in summary
    lines = [json.loads(line) for line in open(out / "run" / "metrics.jsonl")]
    losses = [line["train/loss"] for line in lines if "train/loss" in line]
    assert len(losses) == 2 and all(np.isfinite(losses)), name
    recorded = json.load(open(out / "run" / "config.json"))
    assert tuple(recorded["data"]["crop_size"]) == tuple(config.data.crop_size)
    assert recorded["data"]["train_pp"] == config.data.train_pp


if __name__ == "__main__":
  for recipe in sys.argv[2:]:
    run_recipe(recipe, os.path.join(sys.argv[1], recipe))
