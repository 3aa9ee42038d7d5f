"""Folder datasets of every pixel format a user brings train, evaluate and predict: 8- and 16-bit,
grey and colour, into 1- and 3-channel models, with each intensity normalisation (a few steps on
files written here, through the trainer and the predictor users run)."""

import itertools
import json
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from segjax import predict
from segjax import predict_files
from segjax import pictures
from segjax import runs
from segjax import train
from segjax.data import pipeline

from conftest import load_config

FORMATS = {
  "grey8": (np.uint8, 1),
  "rgb8": (np.uint8, 3),
  "grey16": (np.uint16, 1),
  "rgb16": (np.uint16, 3),
}
NORMALISATIONS = ("mean_std", "minmax", "percentile")
# Each format with each normalisation; the model's channels alternate so that every format and
# every normalisation meets both 1- and 3-channel models.
CASES = [
  (fmt, norm, (1, 3)[(i + j) % 2])
  for (i, fmt), (j, norm) in itertools.product(enumerate(FORMATS), enumerate(NORMALISATIONS))
]
SIZE = (40, 48)


def _write_folder(root, fmt):
  """Two training frames and one validation frame: a bright disc (class 1) on a dim background,
  in ``fmt``'s dtype and channels, with masks and classes.json."""
  dtype, channels = FORMATS[fmt]
  top = np.iinfo(dtype).max
  rng = np.random.default_rng(0)
  for split, count in (("train", 2), ("val", 1)):
    for sub in ("images", "masks"):
      os.makedirs(os.path.join(root, split, sub), exist_ok=True)
    for i in range(count):
      mask = np.zeros(SIZE, np.uint8)
      cv2.circle(mask, (int(rng.integers(12, 36)), int(rng.integers(12, 28))), 9, 1, -1)
      level = 0.1 + 0.6 * mask + rng.normal(0, 0.03, SIZE)
      image = (level[..., None] * np.array([1.0, 0.8, 0.6][:channels]) * top).clip(0, top)
      image = image.astype(dtype).squeeze()
      ext = "tif" if dtype == np.uint16 else "png"
      assert cv2.imwrite(os.path.join(root, split, "images", f"{split}{i}.{ext}"), image)
      assert cv2.imwrite(os.path.join(root, split, "masks", f"{split}{i}.png"), mask)
  with open(os.path.join(root, "classes.json"), "w") as f:
    json.dump({"classes": [{"id": 0, "name": "background"}, {"id": 1, "name": "nucleus"}]}, f)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  root = tmp_path_factory.mktemp("formats")
  for fmt in FORMATS:
    _write_folder(str(root / fmt), fmt)
  return root


@pytest.mark.slow
@pytest.mark.parametrize("fmt,normalization,channels", CASES)
def test_folder_trains_evaluates_and_predicts(folders, tmp_path, fmt, normalization, channels):
  config = load_config("unet_folder")
  config.data.update(
    dict(
      root=str(folders / fmt),
      data_dir=str(folders / "tfds"),
      channels=channels,
      normalization=normalization,
      mean=(0.5,) * channels,
      std=(0.25,) * channels,
      patch_size=(32, 32),
      patch_stride=(16, 16),
      crop_size=(32, 32),
    )
  )
  config.model.update(dict(features=4, depth=2))
  config.update(
    dict(
      num_devices=1,
      batch_size=2,
      eval_batch_size=1,
      num_train_steps=2,
      log_every_steps=1,
      checkpoint_every_steps=2,
    )
  )
  config.predict.num_images = 0
  # What the model sees: ``channels`` channels of the normalised frame (undoing mean/std): the
  # dtype's range for mean_std (the disc is drawn at 0.7 of it), stretched to [0, 1] otherwise.
  ds, _ = pipeline.eval_dataset(
    pipeline.get_source(config.data), config.data, config.eval_splits[0], local_batch_size=1
  )
  unit = next(pipeline.as_numpy(ds))["image"][0] * 0.25 + 0.5
  assert unit.shape == (*SIZE, channels)
  low, high = float(unit.min()), float(unit.max())
  if normalization == "mean_std":
    assert 0.0 <= low < 0.2 and 0.6 < high < 0.85, (low, high)
  else:
    assert abs(low) < 1e-5 and abs(high - 1.0) < 1e-5, (low, high)
  workdir = str(tmp_path / "run")
  result = train.train_and_evaluate(config, workdir)
  summary = next(iter(result.metrics.values()))
  assert sum(map(sum, summary["confusion_matrix"])) == SIZE[0] * SIZE[1]  # the validation frame
  run = runs.load(workdir)
  first = run.variables["params"]["down0"]["ConvNormAct_0"]["Conv_0"]["kernel"]
  assert first.shape[2] == channels and np.all(np.isfinite(first))
  assert run.config.data.normalization == normalization
  predictor = predict.Predictor(run)
  images = predict.list_inputs(str(folders / fmt / "val" / "images"))
  rows = predict_files.predict_files(predictor, images, str(tmp_path / "labels"))
  assert len(rows) == 1
  mask = np.asarray(Image.open(tmp_path / "labels" / "masks" / "val0.png"))  # palette indices
  assert mask.shape == SIZE and set(np.unique(mask)) <= {0, 1}


@pytest.mark.slow
def test_a_folder_of_mixed_image_sizes_trains_evaluates_draws_and_predicts(tmp_path, monkeypatch):
  """16-bit grey TIFFs of three sizes, three classes, the unet_folder defaults: the run evaluates
  every validation pixel exactly once; the confusion matrix of the default evaluation (batch 4 on
  4 devices) equals that of batch 1 on one device, with and without eval_size_multiple; pictures
  and predicted files are at each image's own size."""
  from segjax import evaluation
  from segjax import visualize

  rng = np.random.default_rng(1)
  root = tmp_path / "data"
  val_sizes = [(36, 44), (40, 52), (36, 44), (45, 38), (40, 52)]
  for split, sizes in (("train", [(40, 52), (36, 44), (45, 38), (48, 48)]), ("val", val_sizes)):
    for sub in ("images", "masks"):
      os.makedirs(root / split / sub)
    for i, size in enumerate(sizes):
      mask = np.zeros(size, np.uint8)
      cv2.circle(mask, (int(rng.integers(10, 28)), int(rng.integers(10, 26))), 8, 1, -1)
      cv2.rectangle(mask, (size[1] - 14, size[0] - 12), (size[1] - 3, size[0] - 3), 2, -1)
      image = (
        (4000 + 20000.0 * (mask > 0) + 9000.0 * (mask == 2) + rng.normal(0, 800, size))
        .clip(0, 65535)
        .astype(np.uint16)
      )
      assert cv2.imwrite(str(root / split / "images" / f"{split}{i}.tif"), image)
      assert cv2.imwrite(str(root / split / "masks" / f"{split}{i}.png"), mask)
  (root / "classes.json").write_text(
    json.dumps(
      {
        "classes": [
          {"id": 0, "name": "background"},
          {"id": 1, "name": "cell"},
          {"id": 2, "name": "debris"},
        ]
      }
    )
  )
  config = load_config("unet_folder")
  config.data.update(
    dict(
      root=str(root),
      data_dir=str(tmp_path / "tfds"),
      patch_size=(32, 32),
      patch_stride=(16, 16),
      crop_size=(32, 32),
    )
  )
  config.model.update(dict(features=4, depth=2))
  config.update(dict(num_train_steps=6, log_every_steps=3, checkpoint_every_steps=6))
  config.predict.update(dict(num_images=5))
  workdir = str(tmp_path / "run")
  trained = train.train_and_evaluate(config, workdir).metrics["validation"]
  confusion = np.asarray(trained["confusion_matrix"])
  assert confusion.sum() == sum(h * w for h, w in val_sizes)
  one = config.copy_and_resolve_references()
  one.update(dict(eval_batch_size=1, num_devices=1))
  np.testing.assert_array_equal(
    evaluation.evaluate_run(workdir, one)["validation"]["confusion_matrix"], confusion
  )
  padded = {}
  for batch, devices in ((1, 1), (4, 0)):  # each image padded alone: batching changes nothing
    settings = config.copy_and_resolve_references()
    settings.update(dict(eval_batch_size=batch, num_devices=devices))
    settings.data.eval_size_multiple = 16
    padded[batch] = evaluation.evaluate_run(workdir, settings)["validation"]["confusion_matrix"]
  np.testing.assert_array_equal(padded[1], padded[4])
  assert np.sum(padded[1]) == confusion.sum()  # the padding is counted nowhere
  drawn = []
  original = visualize.side_by_side
  monkeypatch.setattr(
    visualize,
    "side_by_side",
    lambda image, prediction, descriptor, label, **kw: (
      drawn.append((image.shape[:2], prediction.shape, label.shape))
      or original(image, prediction, descriptor, label, **kw)
    ),
  )
  run = runs.load(workdir)
  settings = runs.with_run_model(run, config)
  settings.data.eval_pad_to = (64, 64)
  predictor = predict.Predictor(run, settings)
  paths = pictures.draw_split(predictor, pipeline.get_source(settings.data), str(tmp_path / "pics"))
  assert len(paths) == 5 and all(os.path.exists(p) for p in paths)
  assert sorted(d[0] for d in drawn) == sorted(val_sizes)
  assert all(a == b == c for a, b, c in drawn)
  images = predict.list_inputs(str(root / "val" / "images"))
  predict_files.predict_files(predictor, images, str(tmp_path / "labels"))
  for i, size in enumerate(val_sizes):
    assert np.asarray(Image.open(tmp_path / "labels" / "masks" / f"val{i}.png")).shape == size
