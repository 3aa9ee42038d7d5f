"""segjax.data.microscopy and experiments/microscopy.py on frames the tests write: the wheel and folder
readers, the training/held-out regions, Otsu's threshold against OpenCV's and its definition, the
scores of hand-made masks, and the script end to end (two steps) with its table."""

import json
import os
import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pytest

from conftest import ROOT, load_config, xla_flags
from segjax.data import microscopy
from segjax.data import folder


def _frame(height=64, width=128, seed=0):
  """A 16-bit frame of bright discs on a dim noisy background, and its instance ids."""
  rng = np.random.default_rng(seed)
  instances = np.zeros((height, width), np.uint16)
  centres = [(16, 14), (40, 30), (20, 50), (48, 74), (14, 92), (44, 112)]
  for i, (y, x) in enumerate(centres, start=1):
    cv2.circle(instances, (x, y), 7, i, -1)
  image = 8 + rng.integers(0, 6, (height, width)) + 120 * (instances > 0)
  return image.astype(np.uint16), instances


def _wheel(path, image, instances, members=microscopy.WHEEL_MEMBERS):
  with zipfile.ZipFile(path, "w") as wheel:
    for key, array in (("image", image), ("instances", instances)):
      wheel.writestr(members[key], cv2.imencode(".tif", array)[1].tobytes())
  return str(path)


def test_read_frame_from_a_wheel_and_a_folder(tmp_path):
  image, instances = _frame()
  got = microscopy.read_frame(_wheel(tmp_path / "stardist.whl", image, instances))
  np.testing.assert_array_equal(got[0], image)
  np.testing.assert_array_equal(got[1], instances)
  inner = tmp_path / "unpacked" / "stardist" / "data" / "images"
  inner.mkdir(parents=True)
  cv2.imwrite(str(inner / "img2d.tif"), image)
  cv2.imwrite(str(inner / "mask2d.tif"), instances)
  for source in (tmp_path / "unpacked", inner):
    got = microscopy.read_frame(str(source))
    np.testing.assert_array_equal(got[0], image)
    np.testing.assert_array_equal(got[1], instances)


def test_read_frame_names_what_is_wrong(tmp_path):
  image, instances = _frame()
  other = {
    "image": "stardist/data/images/img3d.tif",
    "instances": "stardist/data/images/mask2d.tif",
  }
  with pytest.raises(folder.BadFileError, match=r"no stardist/data/images/img2d\.tif"):
    microscopy.read_frame(_wheel(tmp_path / "old.whl", image, instances, other))
  with pytest.raises(folder.BadFileError, match=r"differ in size"):
    microscopy.read_frame(_wheel(tmp_path / "bad.whl", image, instances[:, :100]))
  with pytest.raises(FileNotFoundError, match=r"mask2d\.tif does not exist"):
    (tmp_path / "half").mkdir()
    cv2.imwrite(str(tmp_path / "half" / "img2d.tif"), image)
    microscopy.read_frame(str(tmp_path / "half"))
  with pytest.raises(FileNotFoundError, match="neither a folder nor a wheel"):
    microscopy.read_frame(str(tmp_path / "nothing.whl"))


def test_write_regions_is_a_folder_dataset_of_the_two_halves(tmp_path):
  image, instances = _frame()
  instances[instances == 3] = 9  # ids with gaps are renumbered per region
  root = microscopy.write_regions(str(tmp_path / "data"), image, instances)
  for split, columns in (("train", slice(0, 64)), ("val", slice(64, 128))):
    stored = folder.read_image(os.path.join(root, split, "images", "frame.tif"))
    np.testing.assert_array_equal(stored[..., 0], image[:, columns])
    ids = cv2.imread(os.path.join(root, split, "instances", "frame.png"), cv2.IMREAD_UNCHANGED)
    mask = cv2.imread(os.path.join(root, split, "masks", "frame.png"), cv2.IMREAD_UNCHANGED)
    assert ids.dtype == np.uint16 and sorted(np.unique(ids)) == [0, 1, 2, 3]
    np.testing.assert_array_equal(mask, (instances[:, columns] > 0).astype(np.uint8))
    # the same partition of pixels as the original ids
    pairs = set(zip(ids.ravel().tolist(), instances[:, columns].ravel().tolist()))
    assert len(pairs) == 4
  assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
  np.testing.assert_array_equal(microscopy.held_out(image, instances)[0], image[:, 64:])


def _otsu_by_definition(values):
  """The threshold maximising w0 w1 (mu0 - mu1)^2, by trying every cut between distinct levels."""
  values = values.ravel().astype(np.float64)
  best, best_t = -1.0, None
  for t in np.unique(values)[:-1]:
    low, high = values[values <= t], values[values > t]
    between = len(low) * len(high) * (low.mean() - high.mean()) ** 2
    if between > best:
      best, best_t = between, t
  return best_t


def test_otsu_threshold_matches_opencv_and_its_definition():
  rng = np.random.default_rng(1)
  bimodal = np.concatenate([rng.normal(60, 12, 3000), rng.normal(170, 20, 1000)])
  image8 = np.clip(np.round(bimodal), 0, 255).astype(np.uint8).reshape(50, 80)
  opencv, _ = cv2.threshold(image8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
  assert microscopy.otsu_threshold(image8) == opencv
  image16 = rng.choice([300, 301, 305, 2000, 2100, 2101], size=(20, 30)).astype(np.uint16)
  assert microscopy.otsu_threshold(image16) == _otsu_by_definition(image16) == 305
  assert microscopy.otsu_threshold(np.array([10, 10, 20, 20], np.uint16)) == 10
  with pytest.raises(ValueError, match="single intensity"):
    microscopy.otsu_threshold(np.full((4, 4), 7, np.uint8))
  with pytest.raises(ValueError, match="integer intensities"):
    microscopy.otsu_threshold(np.zeros((4, 4), np.float32))


def test_scores_of_hand_made_masks():
  config = load_config("unet_microscopy:cpu")
  image, instances = _frame()
  perfect = microscopy.score((instances > 0).astype(np.int32), instances, config)
  assert perfect == {"iou": 1.0, "pq": 1.0, "sq": 1.0, "rq": 1.0}
  half = np.isin(instances, [1, 2, 3]).astype(np.int32)  # three of the six nuclei found, exactly
  row = microscopy.score(half, instances, config)
  assert row["iou"] == pytest.approx(0.5, abs=0.02)  # equal discs
  assert row["sq"] == 1.0 and row["rq"] == pytest.approx(3 / (3 + 0.5 * 3))
  otsu = microscopy.threshold_row((image, instances), config)
  assert 8 + 5 <= otsu["threshold"] < 128 and otsu["iou"] == 1.0 and otsu["pq"] == 1.0


@pytest.mark.slow
def test_microscopy_script_trains_and_writes_the_table(tmp_path):
  image, instances = _frame()
  source = _wheel(tmp_path / "stardist.whl", image, instances)
  workdir = tmp_path / "nuclei"
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, "experiments", "microscopy.py"),
      f"--source={source}",
      f"--workdir={workdir}",
      f"--config.data.data_dir={tmp_path / 'tfds'}",
      "--config.num_train_steps=2",
      "--config.model.features=4",
      "--config.model.depth=2",
      "--config.batch_size=2",
      "--config.data.crop_size=(32, 32)",
      "--config.data.patch_size=(48, 48)",
      "--config.data.patch_stride=(16, 16)",
      "--config.data.train_pp=flip_lr|random_crop(32)|boundary_distance(25)",
    ],
    capture_output=True,
    text=True,
    timeout=600,
    cwd=str(tmp_path),
    env={**os.environ, "PYTHONPATH": ROOT, "XLA_FLAGS": xla_flags(1)},
  )
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  rows = json.loads((workdir / "nuclei.json").read_text())
  assert list(rows) == ["model", "otsu", "otsu_gaussian1", "true_mask"]
  assert rows["true_mask"] == {"iou": 1.0, "pq": 1.0, "sq": 1.0, "rq": 1.0}
  assert rows["otsu"]["iou"] == 1.0 and 0.0 <= rows["model"]["iou"] <= 1.0
  final = json.loads((workdir / "run" / "final_metrics.json").read_text())["validation"]
  assert rows["model"]["iou"] == final["iou"]["nucleus"]
  assert rows["model"]["pq"] == final["panoptic"]["things"]["pq"]
  assert (workdir / "nuclei.md").read_text().splitlines()[2].startswith("| model |")
  assert (workdir / "data" / "val" / "images" / "frame.tif").exists()
