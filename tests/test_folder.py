"""Folder datasets written by the tests (16-bit grey TIFF, palette PNG, RGBA, colour masks, COCO JSON),
checked pixel for pixel; every bad-file case; intensity normalisation; patches."""

import json
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from segjax.data import folder
from segjax.data import ops
from segjax.data import patches
from segjax.data import stream

RNG = np.random.default_rng(0)


def write(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if array.ndim == 3 and array.shape[-1] == 3:
    array = array[..., ::-1]
  elif array.ndim == 3 and array.shape[-1] == 4:
    array = array[..., [2, 1, 0, 3]]
  assert cv2.imwrite(path, array)


def write_palette(path, ids):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  pil = Image.fromarray(ids.astype(np.uint8), mode="P")
  pil.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])  # colours differ from the ids
  pil.save(path)


def examples(root, split, tmp_path, **kwargs):
  ds = folder.folder_dataset(str(root), split, data_dir=str(tmp_path / "tfds"), **kwargs)
  return {ex["name"].decode(): ex for ex in ds.as_numpy_iterator()}


def test_grey_16bit_tiff_with_palette_mask_and_instances(tmp_path):
  root = tmp_path / "data"
  image = RNG.integers(0, 65536, (13, 9), dtype=np.uint16)
  ids = RNG.integers(0, 3, (13, 9))
  inst = RNG.integers(0, 300, (13, 9)).astype(np.uint16)
  write(str(root / "train/images/a.tif"), image)
  write_palette(str(root / "train/masks/a.png"), ids)
  write(str(root / "train/instances/a.png"), inst)
  got = examples(root, "train", tmp_path)["a"]
  assert got["image"].dtype == np.uint16 and got["image"].shape == (13, 9, 1)
  np.testing.assert_array_equal(got["image"][..., 0], image)
  np.testing.assert_array_equal(got["semantic"][..., 0], ids)  # palette index = class id
  np.testing.assert_array_equal(got["instance"][..., 0], inst)


def test_rgba_and_grey_images_become_rgb_and_colour_masks_map_through_classes_json(tmp_path):
  root = tmp_path / "data"
  classes = {
    "classes": [
      {"id": 0, "name": "background", "color": [0, 0, 0], "kind": "stuff"},
      {"id": 1, "name": "nucleus", "color": [255, 0, 0], "kind": "thing"},
    ],
    "ignore_label": 255,
  }
  os.makedirs(root, exist_ok=True)
  (root / "classes.json").write_text(json.dumps(classes))
  rgba = RNG.integers(0, 256, (6, 7, 4), dtype=np.uint8)
  grey = RNG.integers(0, 256, (6, 7), dtype=np.uint8)
  ids = RNG.integers(0, 2, (6, 7))
  colour = np.where(ids[..., None] == 1, [255, 0, 0], [0, 0, 0]).astype(np.uint8)
  write(str(root / "val/images/rgba.png"), rgba)
  write(str(root / "val/images/grey.jpg"), grey)  # JPEG: lossy, so compare to what OpenCV reads
  write(str(root / "val/masks/rgba.png"), colour)
  write(str(root / "val/masks/grey.png"), ids.astype(np.uint8))
  got = examples(root, "validation", tmp_path)
  np.testing.assert_array_equal(got["rgba"]["image"], rgba[..., :3])
  stored_grey = cv2.imread(str(root / "val/images/grey.jpg"), cv2.IMREAD_UNCHANGED)
  np.testing.assert_array_equal(got["grey"]["image"], np.repeat(stored_grey[..., None], 3, -1))
  for name in ("rgba", "grey"):
    np.testing.assert_array_equal(got[name]["semantic"][..., 0], ids)
  builder = folder.prepare(str(root), data_dir=str(tmp_path / "tfds"))
  d = builder.descriptor()
  assert d.class_names == ("background", "nucleus") and d.thing_classes == (1,)


def test_classes_json_of_pre_labels_written_inside_the_split_is_read(tmp_path):
  """`experiments/predict.py --output=DATA/train` writes classes.json into the split: it is read
  from there (named classes, colours); two splits with different tables are an error naming both."""
  root = tmp_path / "data"
  classes = {
    "classes": [
      {"id": 0, "name": "sky", "color": [0, 0, 255], "kind": "stuff"},
      {"id": 1, "name": "car", "color": [255, 0, 0], "kind": "thing"},
      {"id": 2, "name": "road", "color": [90, 90, 90], "kind": "stuff"},
    ]
  }
  write(str(root / "train/images/a.png"), np.zeros((4, 5, 3), np.uint8))
  write_palette(str(root / "train/masks/a.png"), np.ones((4, 5), np.int64))
  (root / "train/classes.json").write_text(json.dumps(classes))
  d = folder.prepare(str(root), data_dir=str(tmp_path / "tfds")).descriptor()
  assert d.class_names == ("sky", "car", "road") and d.thing_classes == (1,)
  assert d.colormap[2] == (90, 90, 90)
  classes["classes"][2]["name"] = "street"
  write(str(root / "val/images/b.png"), np.zeros((4, 5, 3), np.uint8))
  write_palette(str(root / "val/masks/b.png"), np.ones((4, 5), np.int64))
  (root / "val/classes.json").write_text(json.dumps(classes))
  with pytest.raises(
    folder.BadFileError,
    match=r"train/classes\.json and .*val/classes\.json "
    r"give different classes",
  ):
    folder.prepare(str(root), data_dir=str(tmp_path / "tfds2"))


def test_labelme_pre_labels_read_back_whichever_file_was_corrected(tmp_path):
  """Pre-labels with --format=labelme (masks/NAME.png, labelme/NAME.json and their SHA-256 in
  records/NAME.json, as segjax.predict writes them): the labelme polygons rasterise back to the
  mask; a corrected labelme file wins over the untouched mask, a corrected mask over the untouched
  labelme file; both changed is an error naming them; labelme alone is read."""
  from segjax import prelabels, files
  from segjax.data import readers
  from segjax.data.descriptor import DatasetDescriptor

  descriptor = DatasetDescriptor(
    name="d",
    class_names=("background", "cell", "debris"),
    colormap=((0, 0, 0), (255, 0, 0), (0, 255, 0)),
    stuff_classes=(0, 2),
    thing_classes=(1,),
    ignore_label=255,
    label_divisor=1000,
  )
  labels = np.zeros((20, 24), np.uint8)
  labels[2:9, 3:11] = 1
  cv2.circle(labels, (16, 13), 5, 2, -1)
  labels = labels.astype(np.int64)
  root, split = tmp_path / "data", tmp_path / "data" / "train"
  write(str(split / "images/a.png"), RNG.integers(0, 256, (20, 24, 3), dtype=np.uint8))
  prelabels.write_indexed_png(
    prelabels.output_path(str(split), "masks", "a", ".png"), labels, descriptor.colormap
  )
  document = prelabels.labelme("a.png", labels, None, descriptor)
  (split / "labelme").mkdir()
  (split / "labelme/a.json").write_text(json.dumps(document))
  (split / "classes.json").write_text(json.dumps(prelabels.classes_json(descriptor)))
  (split / "records").mkdir()
  (split / "records/a.json").write_text(
    json.dumps(
      {
        "labels": {
          "masks/a.png": files.sha256(str(split / "masks/a.png")),
          "labelme/a.json": files.sha256(str(split / "labelme/a.json")),
        }
      }
    )
  )
  np.testing.assert_array_equal(
    readers.read_labelme(str(split / "labelme/a.json"), descriptor.class_names, (20, 24)), labels
  )
  read = lambda tag: examples(root, "train", tmp_path / tag)["a"]["semantic"][..., 0]
  np.testing.assert_array_equal(read("untouched"), labels)
  # A person relabels the square as debris in the labelme file: that file is read.
  square = next(i for i, shape in enumerate(document["shapes"]) if shape["label"] == "cell")
  document["shapes"][square]["label"] = "debris"
  (split / "labelme/a.json").write_text(json.dumps(document))
  np.testing.assert_array_equal(read("labelme_edited"), np.where(labels == 1, 2, labels))
  # Both corrected: which one is meant cannot be told.
  edited = labels.copy()
  edited[0, 0] = 2
  prelabels.write_indexed_png(str(split / "masks/a.png"), edited, descriptor.colormap)
  with pytest.raises(folder.BadFileError, match=r"masks/a\.png and .*labelme/a\.json both differ"):
    folder.prepare(str(root), data_dir=str(tmp_path / "both_edited"))
  # The labelme file as written again, the mask corrected: the mask is read.
  (split / "labelme/a.json").write_text(
    json.dumps(prelabels.labelme("a.png", labels, None, descriptor))
  )
  np.testing.assert_array_equal(read("mask_edited"), edited)
  # No masks at all: the labelme file; an unknown label is named.
  os.remove(split / "masks/a.png")
  np.testing.assert_array_equal(read("labelme_only"), labels)
  document["shapes"][square]["label"] = "nucleus"
  (split / "labelme/a.json").write_text(json.dumps(document))
  with pytest.raises(
    folder.BadFileError,
    match=r"labelme/a\.json: shape \d+ has label "
    r"'nucleus', which is not a class \(background, cell, debris\)",
  ):
    folder.prepare(str(root), data_dir=str(tmp_path / "unknown_label"))


def test_coco_annotations_instead_of_masks(tmp_path):
  from pycocotools import mask as mask_utils

  root = tmp_path / "data"
  write(str(root / "train/images/img.png"), RNG.integers(0, 256, (10, 12, 3), dtype=np.uint8))
  square = np.zeros((10, 12), np.uint8)
  square[1:4, 2:6] = 1
  rle = mask_utils.encode(np.asfortranarray(square))
  rle["counts"] = rle["counts"].decode()
  coco = {
    "images": [{"id": 7, "file_name": "img.png", "height": 10, "width": 12}],
    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    "annotations": [
      {
        "id": 1,
        "image_id": 7,
        "category_id": 2,
        "iscrowd": 0,
        "area": 12,
        "bbox": [2, 1, 4, 3],
        "segmentation": rle,
      },
      {
        "id": 2,
        "image_id": 7,
        "category_id": 1,
        "iscrowd": 0,
        "area": 9,
        "bbox": [7, 5, 3, 3],
        "segmentation": [[7, 5, 10, 5, 10, 8, 7, 8]],
      },
    ],
  }
  (root / "train/annotations.json").write_text(json.dumps(coco))
  got = examples(root, "train", tmp_path)["img"]
  expected_polygon = mask_utils.decode(
    mask_utils.frPyObjects([[7, 5, 10, 5, 10, 8, 7, 8]], 10, 12)
  )[..., 0]
  want = np.where(square == 1, 2, np.where(expected_polygon == 1, 1, 0))
  np.testing.assert_array_equal(got["semantic"][..., 0], want)
  np.testing.assert_array_equal(
    got["instance"][..., 0], np.where(square == 1, 1, np.where(expected_polygon == 1, 2, 0))
  )
  # Masks beside the JSON (as pre-labels are written): equal is fine, an edited one is named.
  write_palette(str(root / "train/masks/img.png"), want)
  assert (examples(root, "train", tmp_path / "both")["img"]["semantic"][..., 0] == want).all()
  edited = want.copy()
  edited[0, :3] = 2
  write_palette(str(root / "train/masks/img.png"), edited)
  with pytest.raises(
    folder.BadFileError,
    match=r"masks/img\.png and .*annotations\.json "
    r"disagree on 3 pixels of img: keep the one you corrected",
  ):
    folder.prepare(str(root), data_dir=str(tmp_path / "tfds_edited"))
  os.remove(root / "train/masks/img.png")
  # An annotation without a segmentation is named: file, annotation id, image.
  for empty in ([], [[]]):
    coco["annotations"][1]["segmentation"] = empty
    (root / "train/annotations.json").write_text(json.dumps(coco))
    with pytest.raises(
      folder.BadFileError,
      match=r"annotations\.json: annotation id 2 of img\.png "
      r"\(category 1\) has an empty segmentation",
    ):
      folder.prepare(str(root), data_dir=str(tmp_path / f"tfds_empty{len(empty)}"))


@pytest.mark.parametrize(
  "case,message",
  [
    ("unreadable", r"broken\.png: unreadable image"),
    ("size", r"masks/a\.png: mask size 4x5 differs from the image's 6x5"),
    ("orphan", r"masks/ghost\.png: mask without an image"),
    ("label", r"masks/a\.png: label 7 is neither a class \(0\.\.1\) nor the ignore label 255"),
    ("empty", r"val/images holds no images \(files ending in \.png"),
  ],
)
def test_bad_files_raise_errors_naming_them(tmp_path, case, message):
  root = tmp_path / "data"
  (tmp_path / "data").mkdir()
  (root / "classes.json").write_text(json.dumps({"classes": [{"id": 0}, {"id": 1}]}))
  write(str(root / "train/images/a.png"), np.zeros((5, 6, 3), np.uint8))
  mask = np.zeros((5, 6), np.uint8)
  if case == "unreadable":
    (root / "train/images/broken.png").write_bytes(b"not a png")
    write(str(root / "train/masks/broken.png"), mask)
  if case == "size":
    mask = np.zeros((5, 4), np.uint8)
  if case == "orphan":
    write(str(root / "train/masks/ghost.png"), mask)
  if case == "label":
    mask[2, 3] = 7
  if case == "empty":
    (root / "val/images").mkdir(parents=True)
  write(str(root / "train/masks/a.png"), mask)
  with pytest.raises(folder.BadFileError, match=message):
    examples(root, "train", tmp_path)


def test_skip_bad_leaves_them_out_and_reports(tmp_path, capsys):
  root = tmp_path / "data"
  write(str(root / "train/images/good.png"), np.zeros((4, 4, 3), np.uint8))
  write(str(root / "train/masks/good.png"), np.ones((4, 4), np.uint8))
  write(str(root / "train/masks/stray.png"), np.full((4, 4), 7, np.uint8))
  write(str(root / "train/images/stray.png"), np.zeros((4, 4, 3), np.uint8))
  write(str(root / "train/images/bad.png"), np.zeros((4, 4, 3), np.uint8))
  write(str(root / "train/masks/bad.png"), np.ones((3, 4), np.uint8))
  got = examples(root, "train", tmp_path, skip_bad=True)
  assert sorted(got) == ["good", "stray"]
  builder = folder.prepare(str(root), data_dir=str(tmp_path / "tfds"), skip_bad=True)
  report = json.load(open(os.path.join(builder.data_dir, "report.json")))
  assert report["count"] == 1 and "bad.png" in report["skipped"]["train"][0]
  # What preparation printed: the counts, the classes the label values made (the stray 7 shows),
  # and where the report is.
  printed = capsys.readouterr().out
  assert "(train 2 images)" in printed
  assert "8 classes from the label values found (class_0, class_1, " in printed
  assert (
    f"Skipped 1 bad files (skip_bad=True); each with its reason in {builder.data_dir}" in printed
  )
  # Labelled training pixels by class (good: 16 of class 1; stray: 16 of class 7).
  pixels = report["class_pixels"]
  assert pixels["class_1"] == 16 and pixels["class_7"] == 16 and sum(pixels.values()) == 32
  assert "Labelled training pixels by class: class_0 0.0%, class_1 50.0%," in printed
  assert report["class_images"]["class_1"] == 1 and report["class_images"]["class_0"] == 0
  assert (
    "Classes in under 1% of the training images: class_0 (0 of 2), class_2 (0 of 2)," in printed
  )


def test_changed_files_are_prepared_again(tmp_path):
  root = tmp_path / "data"
  write(str(root / "train/images/a.png"), np.zeros((4, 4, 3), np.uint8))
  write(str(root / "train/masks/a.png"), np.zeros((4, 4), np.uint8))
  assert list(examples(root, "train", tmp_path)) == ["a"]
  write(str(root / "train/images/b.png"), np.zeros((4, 4, 3), np.uint8))
  write(str(root / "train/masks/b.png"), np.ones((4, 4), np.uint8))
  assert sorted(examples(root, "train", tmp_path)) == ["a", "b"]


def test_normalisation_modes():
  image = tf.constant(np.arange(1, 101, dtype=np.uint16).reshape(10, 10, 1))
  unit = lambda mode, **kw: ops.to_unit(image, mode=mode, **kw).numpy()
  np.testing.assert_allclose(unit("mean_std", scale=65535.0), image.numpy() / 65535.0, rtol=1e-6)
  np.testing.assert_allclose(unit("minmax"), (image.numpy() - 1) / 99.0, rtol=1e-6)
  # Percentiles 10 and 90 of 1..100 (nearest rank on 0..99): 11 and 90 -> clipped and stretched.
  expected = np.clip((image.numpy() - 11.0) / 79.0, 0, 1)
  np.testing.assert_allclose(unit("percentile", percentiles=(10.0, 90.0)), expected, rtol=1e-6)
  with pytest.raises(ValueError, match="normalization"):
    unit("zscore")


def test_patch_extraction_and_reassembly_are_exact():
  image = RNG.normal(size=(37, 50, 3)).astype(np.float32)
  tiles, positions = patches.extract_patches(image, (16, 16), (12, 12))
  assert positions[-1] == (21, 34)  # the last patches are aligned to the border
  np.testing.assert_array_equal(patches.reassemble(tiles, positions, image.shape), image)
  small, pos = patches.extract_patches(image[:5, :7], (16, 16), (8, 8))
  assert small.shape == (1, 16, 16, 3)
  np.testing.assert_array_equal(patches.reassemble(small, pos, (5, 7)), image[:5, :7])
  # The TensorFlow version the training stream uses cuts the same patches.
  labels = RNG.integers(0, 4, (37, 50)).astype(np.int32)
  example = stream.pad_to_patch(
    {"image": tf.constant(image), "semantic": tf.constant(labels)}, (16, 16), 255
  )
  grid = stream.tf_grid(37, 50, (16, 16), (12, 12)).numpy()
  got = [stream.cut_patch(example, tf.constant(p), (16, 16)) for p in grid]
  assert [tuple(p["patch_position"].numpy()) for p in got] == positions
  np.testing.assert_array_equal(np.stack([p["image"].numpy() for p in got]), tiles)


def test_patches_through_the_training_pipeline_counts_and_class_balance(tmp_path):
  """Two 64x96 images cut into a 32x32 grid (6 patches each): without class balancing one pass
  of the stream holds each of the 12 patches once; with ``class_balanced=0.5`` the one patch
  with the rare class 2 is drawn ~0.22 of the time instead of 1/12 (0.5/12 from the plain stream,
  + 0.5 x (1/3 for class 2 + 1/3 x 1/12 for class 0), class 1 never shares its patch)."""
  import ml_collections
  from segjax.data import pipeline

  root = tmp_path / "frames"
  for split in ("train", "val"):
    (root / split / "images").mkdir(parents=True)
    (root / split / "masks").mkdir(parents=True)
  for i in range(2):
    mask = np.zeros((64, 96), np.uint8)
    mask[40:, 40:] = 1  # class 1: the lower-right patches
    if i == 0:
      mask[4:10, 4:10] = 2  # class 2: one corner of the first image's first patch
    image = np.full((64, 96, 3), 100, np.uint8)
    for split in ("train", "val"):
      cv2.imwrite(str(root / split / "images" / f"{i}.png"), image)
      cv2.imwrite(str(root / split / "masks" / f"{i}.png"), mask)
  data = ml_collections.ConfigDict(
    dict(
      name="folder",
      root=str(root),
      data_dir=str(tmp_path / "tfds"),
      skip_bad=False,
      train_split="train",
      channels=3,
      normalization="mean_std",
      mean=(0.5,) * 3,
      std=(0.25,) * 3,
      patch_size=(32, 32),
      patch_stride=(32, 32),
      min_labelled_fraction=0.0,
      class_balanced=0.0,
      crop_size=(32, 32),
      train_pp="",
      eval_pp="",
    )
  )
  source = pipeline.get_source(data)

  def drawn(count):
    ds = pipeline.train_dataset(source, data, local_batch_size=4, seed=0)
    batches = [b for _, b in zip(range(count // 4), pipeline.as_numpy(ds, source))]
    return np.concatenate([b["semantic"] for b in batches])

  first_pass = drawn(12)  # one epoch: a permutation of the 12 patches
  keys = {(int((p == 2).any()), int((p == 1).sum())) for p in first_pass}
  assert len(first_pass) == 12 and sum((p == 2).any() for p in first_pass) == 1
  assert keys == {(1, 0), (0, 0), (0, 24 * 24), (0, 24 * 32)}, keys
  data.update(dict(class_balanced=0.5))
  stream = drawn(2400)
  share = np.mean([(p == 2).any() for p in stream])
  assert 0.18 < share < 0.27, share


def test_evaluation_batches_each_image_at_its_own_size_on_every_process(tmp_path):
  """Five images of three sizes, local batch 2, one and two processes: batches hold one size,
  sizes in the order they first appear, every image exactly once and unpadded, blanks (invalid,
  ignored labels) complete each size's last batch, and both processes run the same shapes in the
  same order; eval_size_multiple and eval_pad_to pad each image alone and record its size."""
  from conftest import load_config
  from segjax.data import pipeline

  root = tmp_path / "data"
  sizes = {"a": (5, 6), "b": (7, 6), "c": (5, 6), "d": (4, 9), "e": (7, 6)}
  for value, (name, (height, width)) in enumerate(sizes.items()):
    write(str(root / f"val/images/{name}.png"), np.full((height, width, 3), value, np.uint8))
    write(str(root / f"val/masks/{name}.png"), np.zeros((height, width), np.uint8))
  (root / "classes.json").write_text(json.dumps({"classes": [{"id": 0}, {"id": 1}]}))
  config = load_config("unet_folder")
  config.data.update(
    dict(root=str(root), data_dir=str(tmp_path / "tfds"), mean=(0.0,) * 3, std=(1.0,) * 3)
  )
  source = pipeline.get_source(config.data)
  stored = pipeline.image_sizes(source, config.data, "validation")  # the split's order
  order = list(dict.fromkeys(map(tuple, stored)))
  for count in (1, 2):
    streams = []
    for process in range(count):
      ds, num_batches = pipeline.eval_dataset(
        source,
        config.data,
        "validation",
        local_batch_size=2,
        process_index=process,
        process_count=count,
      )
      batches = list(pipeline.as_numpy(ds, source))
      assert len(batches) == num_batches
      streams.append(batches)
    seen = []
    shapes = [[b["image"].shape for b in batches] for batches in streams]
    assert all(s == shapes[0] for s in shapes)  # every process: the same shapes, same order
    assert list(dict.fromkeys(s[1:3] for s in shapes[0])) == order
    for batch in (b for batches in streams for b in batches):
      for i in range(2):
        if batch["valid"][i]:
          assert tuple(batch["size"][i]) == batch["image"].shape[1:3]
          seen.append(round(float(batch["image"][i, 0, 0, 0]) * 255))
        else:
          assert tuple(batch["size"][i]) == (0, 0) and np.all(batch["semantic"][i] == 255)
    assert sorted(seen) == [0, 1, 2, 3, 4]
  assert len(streams[0]) == 3  # one batch of each size on each of the two processes
  config.data.eval_size_multiple = 4
  ds, _ = pipeline.eval_dataset(source, config.data, "validation", local_batch_size=2)
  for batch in pipeline.as_numpy(ds, source):
    for i in np.flatnonzero(batch["valid"]):
      height, width = batch["size"][i]
      assert batch["image"].shape[1:3] == (-(-height // 4) * 4, -(-width // 4) * 4)
      assert np.all(batch["semantic"][i, :height, :width] == 0)  # padding: the ignore label
      assert (batch["semantic"][i] == 255).sum() == np.prod(
        batch["image"].shape[1:3]
      ) - height * width
  config.data.update(dict(eval_size_multiple=None, eval_pad_to=(6, 6)))
  ds, _ = pipeline.eval_dataset(source, config.data, "validation", local_batch_size=2)
  assert sorted({b["image"].shape[1:3] for b in pipeline.as_numpy(ds, source)}) == [
    (6, 6),
    (6, 9),
    (7, 6),
  ]  # at least 6x6: (5, 6) -> (6, 6), (4, 9) -> (6, 9)


@pytest.mark.slow
def test_the_input_pipeline_leaves_no_autograph_files_behind(tmp_path):
  """Preparing a folder (its class count), evaluation and training batches, in a process that
  ends without clean-up (as a killed one does): TensorFlow's autograph writes a
  ``__autograph_generated_file*.py`` into the temporary directory for each function it converts
  and removes them only at a normal exit; segjax's tf.data functions are traced as written."""
  import subprocess
  import sys

  root, scratch = tmp_path / "data", tmp_path / "tmp"
  scratch.mkdir()
  for split in ("train", "val"):
    for i in range(2):
      write(str(root / f"{split}/images/{i}.png"), np.full((20, 24, 3), 40 * i, np.uint8))
      write(str(root / f"{split}/masks/{i}.png"), np.full((20, 24), i, np.uint8))
  (root / "classes.json").write_text(json.dumps({"classes": [{"id": 0}, {"id": 1}]}))
  script = f"""
import os, sys
sys.path.insert(0, {os.path.dirname(__file__)!r})
from conftest import load_config
from segjax.data import pipeline
config = load_config("unet_folder")
config.data.update(dict(root={str(root)!r}, data_dir={str(tmp_path / "tfds")!r},
                        patch_size=(16, 16), patch_stride=(8, 8), crop_size=(16, 16)))
source = pipeline.get_source(config.data)
ds, _ = pipeline.eval_dataset(source, config.data, "validation", local_batch_size=2)
assert len(list(pipeline.as_numpy(ds))) == 1
train = pipeline.train_dataset(source, config.data, local_batch_size=2, seed=0)
assert next(pipeline.as_numpy(train))["image"].shape == (2, 16, 16, 3)
print("ran", flush=True)
os._exit(0)
"""
  done = subprocess.run(
    [sys.executable, "-c", script],
    capture_output=True,
    text=True,
    env={**os.environ, "TMPDIR": str(scratch)},
    timeout=300,
    check=False,
  )
  assert done.returncode == 0 and "ran" in done.stdout, done.stderr[-2000:]
  assert not list(scratch.glob("__autograph_generated_file*")), sorted(os.listdir(scratch))
