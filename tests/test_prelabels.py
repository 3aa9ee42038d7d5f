"""Pre-label export: round trips through the folder dataset, file-name safety, uncertainty."""

import csv

import cv2
import numpy as np
import pytest

from segjax import prelabels
from segjax import files
from segjax.data import folder
from segjax.data.descriptor import DatasetDescriptor
from segjax.data.shapes import DESCRIPTOR, render_scene


def scenes(n=2):
  for i in range(n):
    image, semantic, instance = render_scene(np.random.default_rng([5, i]), 48, 5)
    yield f"scene_{i}", image, semantic, instance


def test_png_and_coco_exports_read_back_through_the_folder_dataset(tmp_path):
  for fmt in ("png", "coco"):
    root = tmp_path / fmt
    split = root / "train"
    coco = prelabels.CocoWriter(DESCRIPTOR, stuff=True)  # every class, to read the masks back
    truth = {}
    for name, image, semantic, instance in scenes():
      path = prelabels.output_path(str(split), "images", name, ".png")
      cv2.imwrite(path, image[..., ::-1])
      if fmt == "png":
        prelabels.write_indexed_png(
          prelabels.output_path(str(split), "masks", name, ".png"), semantic, DESCRIPTOR.colormap
        )
        prelabels.write_instance_png(
          prelabels.output_path(str(split), "instances", name, ".png"), instance
        )
      else:
        coco.add(name + ".png", semantic, instance)
      truth[name] = (semantic, instance)
    if fmt == "coco":
      files.write_json(str(split / "annotations.json"), coco.data)
    files.write_json(str(root / "classes.json"), prelabels.classes_json(DESCRIPTOR))
    ds = folder.folder_dataset(str(root), "train", data_dir=str(tmp_path / "tfds"))
    got = {ex["name"].decode(): ex for ex in ds.as_numpy_iterator()}
    assert sorted(got) == sorted(truth)
    for name, (semantic, instance) in truth.items():
      np.testing.assert_array_equal(got[name]["semantic"][..., 0], semantic)
      if fmt == "png":
        np.testing.assert_array_equal(got[name]["instance"][..., 0], instance)
      else:  # COCO renumbers instances in annotation order: same partition of the things
        pairs = set(
          zip(instance[instance > 0].tolist(), got[name]["instance"][..., 0][instance > 0].tolist())
        )
        assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})


@pytest.mark.parametrize("name", ["../escape", "a/b", "/etc/passwd", "..", "", "x\\y"])
def test_path_traversal_names_are_refused(tmp_path, name):
  with pytest.raises(ValueError, match="refusing output file name"):
    prelabels.output_path(str(tmp_path), "masks", name, ".png")
  assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing was written anywhere


def test_labelme_polygons_and_coco_polygons():
  labels = np.zeros((10, 12), np.uint8)
  labels[2:6, 3:9] = 2  # one disc-class instance (a thing) on stripes (stuff 0)
  instance = (labels == 2).astype(np.uint16)
  doc = prelabels.labelme("a.png", labels, instance, DESCRIPTOR)
  shapes = {s["label"]: s for s in doc["shapes"]}
  assert shapes["disc"]["group_id"] == 1 and shapes["stripes"]["group_id"] is None
  xs, ys = zip(*shapes["disc"]["points"])
  assert (min(xs), max(xs), min(ys), max(ys)) == (3, 8, 2, 5)
  writer = prelabels.CocoWriter(DESCRIPTOR)
  writer.add("a.png", labels, instance)
  disc = [a for a in writer.data["annotations"] if a["category_id"] == 2][0]
  assert disc["area"] == 24 and disc["bbox"] == [3.0, 2.0, 6.0, 4.0]


def test_uncertainty_hand_computed_and_review_order(tmp_path):
  certain = np.tile([1.0, 0.0], (2, 2, 1))
  unsure = np.tile([0.5, 0.5], (2, 2, 1))
  assert prelabels.uncertainty(certain) == pytest.approx(0.0, abs=1e-9)
  assert prelabels.uncertainty(unsure) == pytest.approx(1.0)
  assert prelabels.uncertainty(np.tile([0.7, 0.2, 0.1], (1, 1, 1)), "margin") == pytest.approx(0.5)
  path = prelabels.write_review(
    str(tmp_path / "review.csv"),
    [{"name": "a", "uncertainty": 0.1}, {"name": "b", "uncertainty": 0.7}],
  )
  rows = list(csv.DictReader(open(path)))
  assert [r["name"] for r in rows] == ["b", "a"] and rows[0]["rank"] == "1"


def test_coco_and_labelme_leave_the_background_out(tmp_path):
  descriptor = DatasetDescriptor(
    "cells",
    ("background", "cell"),
    ((0, 0, 0), (0, 200, 0)),
    thing_classes=(1,),
    stuff_classes=(0,),
  )
  labels = np.zeros((12, 16), np.uint8)
  labels[2:6, 3:9] = 1
  labels[8:11, 10:14] = 1
  instance = np.zeros_like(labels, np.uint16)
  instance[2:6, 3:9], instance[8:11, 10:14] = 1, 2
  writer = prelabels.CocoWriter(descriptor)
  writer.add("a.png", labels, instance)
  assert [c["name"] for c in writer.data["categories"]] == ["cell"]
  assert sorted(a["area"] for a in writer.data["annotations"]) == [12, 24]  # no background region
  doc = prelabels.labelme("a.png", labels, instance, descriptor)
  assert [s["label"] for s in doc["shapes"]] == ["cell", "cell"]
  # Read back as a folder dataset: pixels no annotation covers are the background again.
  split = tmp_path / "data" / "train"
  cv2.imwrite(
    prelabels.output_path(str(split), "images", "a", ".png"), np.zeros((12, 16, 3), np.uint8)
  )
  files.write_json(str(split / "annotations.json"), writer.data)
  files.write_json(str(tmp_path / "data" / "classes.json"), prelabels.classes_json(descriptor))
  got = next(
    folder.folder_dataset(
      str(tmp_path / "data"), "train", data_dir=str(tmp_path / "tfds")
    ).as_numpy_iterator()
  )
  np.testing.assert_array_equal(got["semantic"][..., 0], labels)


def test_atomic_writers_leave_nothing_half_written(tmp_path):
  """A write that fails midway (NaN is not JSON; a writer raising) keeps the previous file and
  leaves no temporary file behind."""
  import json
  import os

  path = str(tmp_path / "metrics.json")
  files.write_json(path, {"miou": 0.5})
  with pytest.raises(ValueError):
    files.write_json(path, {"miou": float("nan")})

  def half(tmp):
    with open(tmp, "w") as f:
      f.write("{")
    raise OSError("disk full")

  with pytest.raises(OSError, match="disk full"):
    files.write_atomic(path, half)
  assert json.load(open(path)) == {"miou": 0.5} and os.listdir(tmp_path) == ["metrics.json"]


def test_labelme_pre_labels_from_predict_train_back_and_a_corrected_file_is_read(
  straight_run, tmp_path
):
  """experiments/predict.py's labelme output written as a dataset's split: read back it equals
  the predicted masks; a labelme file a person edits is what the folder dataset reads."""
  import json
  from segjax import predict, runs
  from segjax import predict_files  # pylint: disable=import-outside-toplevel

  config, workdir, _ = straight_run
  predictor = predict.Predictor(runs.load(workdir), config)
  (tmp_path / "new").mkdir()
  inputs = []
  for name, image, _, _ in scenes(2):
    inputs.append(str(tmp_path / "new" / f"{name}.png"))
    cv2.imwrite(inputs[-1], image[..., ::-1])
  split = tmp_path / "data" / "train"
  predict_files.predict_files(predictor, inputs, str(split), fmt="labelme", progress=False)
  read = lambda tag: {
    k: v["semantic"][..., 0]
    for k, v in (
      (ex["name"].decode(), ex)
      for ex in folder.folder_dataset(
        str(tmp_path / "data"), "train", data_dir=str(tmp_path / tag)
      ).as_numpy_iterator()
    )
  }
  masks = {n: folder.read_mask(str(split / "masks" / f"{n}.png")) for n in ("scene_0", "scene_1")}
  got = read("as_written")
  for name in masks:
    np.testing.assert_array_equal(got[name], masks[name])
  document = json.loads((split / "labelme" / "scene_0.json").read_text())
  document["shapes"].append(
    {
      "label": predictor.descriptor.class_names[1],
      "shape_type": "polygon",
      "points": [[0, 0], [5, 0], [5, 5], [0, 5]],
    }
  )  # last: drawn on top
  (split / "labelme" / "scene_0.json").write_text(json.dumps(document))
  got = read("corrected")
  assert (got["scene_0"][:6, :6] == 1).all()
  np.testing.assert_array_equal(got["scene_1"], masks["scene_1"])
