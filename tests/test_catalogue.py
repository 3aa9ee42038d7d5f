"""Catalogue adapters on tfds.testing.mock_data (random examples with the real features; no
download) against the mappings written out here, and COCO panoptic on a hand-built example."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from segjax.data import catalogue

EXPECTED = {
  "oxford_iiit_pet": ("segmentation_mask", lambda m: np.select([m == 1, m == 2], [1, 0], 255)),
  "cityscapes": (
    "segmentation_label",
    lambda m: np.where(m < 34, catalogue.CITYSCAPES_TABLE[np.minimum(m, 33)], 255),
  ),
  "scene_parse150": ("annotation", lambda m: np.where(m[..., :1] == 0, 255, m[..., :1] - 1)),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_semantic_adapters_on_mock_data(name):
  adapter = catalogue.get(name)
  key, mapping = EXPECTED[name]
  with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
    ds = tfds.builder(adapter.builder).as_dataset(split="train")
    for raw in ds.take(2):
      out = adapter.adapt(raw)
      labels = raw[key].numpy().astype(np.int64)
      np.testing.assert_array_equal(out["semantic"].numpy(), mapping(labels))
      assert out["image"].shape[-1] == 3
  d = adapter.descriptor
  assert d.num_classes == {"oxford_iiit_pet": 2, "cityscapes": 19, "scene_parse150": 150}[name]


@pytest.mark.parametrize("name,max_value", [("voc", 20), ("cityscapes_panoptic", 33999)])
def test_segjax_builders_on_mock_data(name, max_value):
  adapter = catalogue.get(name)
  with tfds.testing.mock_data(
    num_examples=1, max_value=max_value, policy=tfds.testing.MockPolicy.USE_CODE
  ):
    raw = next(iter(tfds.builder(adapter.builder).as_dataset(split="train")))
  out = adapter.adapt(raw)
  semantic = out["semantic"].numpy()
  assert set(np.unique(semantic)) <= set(range(adapter.descriptor.num_classes)) | {255}
  if adapter.instances:
    assert (
      out["instance"].numpy()[~np.isin(semantic, adapter.descriptor.thing_classes)] == 0
    ).all()


def test_cityscapes_train_ids():
  table = catalogue.CITYSCAPES_TABLE
  assert (table[7], table[26], table[33], table[0], table[6]) == (0, 13, 18, 255, 255)
  assert sorted(set(table.tolist()) - {255}) == list(range(19))


def test_coco_panoptic_adapter_hand_built_and_on_mock_data():
  adapter = catalogue.get("coco_panoptic")
  ids = np.array([[0, 5, 5], [300, 300, 70000]])  # 0 = unlabelled
  rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
  example = {
    "image": tf.zeros((2, 3, 3), tf.uint8),
    "panoptic_image": tf.constant(rgb),
    "panoptic_objects": {
      "id": tf.constant([300, 5, 70000], tf.int64),
      "label": tf.constant([3, 100, 7], tf.int64),
      "is_crowd": tf.constant([False, False, True]),
    },
  }
  out = adapter.adapt(example)
  np.testing.assert_array_equal(out["semantic"][..., 0], [[255, 100, 100], [3, 3, 7]])
  # thing (label 3) -> instance 1; stuff (100) and crowd (7) -> 0
  np.testing.assert_array_equal(out["instance"][..., 0], [[0, 0, 0], [1, 1, 0]])
  with tfds.testing.mock_data(num_examples=1, policy=tfds.testing.MockPolicy.USE_CODE):
    raw = next(iter(tfds.builder(adapter.builder).as_dataset(split="train")))
    objects = raw["panoptic_objects"]  # mock data draws each field's length on its own
    n = min(int(tf.shape(v)[0]) for v in objects.values())
    raw["panoptic_objects"] = {k: v[:n] for k, v in objects.items()}
    out = adapter.adapt(raw)
    assert out["semantic"].shape[:2] == raw["panoptic_image"].shape[:2]
  assert adapter.descriptor.thing_classes == tuple(range(80))


def test_unknown_adapter_lists_the_known_ones():
  with pytest.raises(KeyError, match="cityscapes"):
    catalogue.get("pascal")


def test_voc_and_cityscapes_panoptic_builders_read_the_official_layouts(tmp_path):
  from PIL import Image
  import cv2

  manual = tmp_path / "manual"
  # VOCdevkit/VOC2012: JPEGImages, palette-PNG SegmentationClass, ImageSets/Segmentation lists.
  voc = manual / "VOCdevkit" / "VOC2012"
  for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
    (voc / sub).mkdir(parents=True)
  labels = np.zeros((6, 8), np.uint8)
  labels[1:4, 2:6] = 15  # person
  labels[0, :] = 255  # border
  for image_id in ("2007_000032", "2007_000039"):
    cv2.imwrite(str(voc / "JPEGImages" / f"{image_id}.jpg"), np.full((6, 8, 3), 128, np.uint8))
    pil = Image.fromarray(labels, mode="P")
    pil.putpalette([0, 0, 0, 128, 0, 0] * 128)
    pil.save(voc / "SegmentationClass" / f"{image_id}.png")
  (voc / "ImageSets/Segmentation/train.txt").write_text("2007_000032\n")
  (voc / "ImageSets/Segmentation/val.txt").write_text("2007_000039\n")
  # leftImg8bit/ and gtFine/ with instance-id maps (label_id * 1000 + n for thing instances).
  ids = np.full((4, 6), 7, np.uint16)  # road (train id 0)
  ids[1:3, 1:3] = 26 * 1000 + 0  # car instance -> train id 13, instance 1
  ids[1:3, 4:6] = 24 * 1000 + 5  # person instance -> train id 11, instance 6
  ids[3, 5] = 26  # car crowd: instance 0
  for folder in ("train", "val"):
    (manual / "leftImg8bit" / folder / "aachen").mkdir(parents=True)
    (manual / "gtFine" / folder / "aachen").mkdir(parents=True)
    cv2.imwrite(
      str(manual / "leftImg8bit" / folder / "aachen" / "aachen_000000_000019_leftImg8bit.png"),
      np.zeros((4, 6, 3), np.uint8),
    )
    cv2.imwrite(
      str(manual / "gtFine" / folder / "aachen" / "aachen_000000_000019_gtFine_instanceIds.png"),
      ids,
    )
  download = tfds.download.DownloadConfig(manual_dir=str(manual))
  for name, check in (("voc", _check_voc), ("cityscapes_panoptic", _check_cityscapes)):
    adapter = catalogue.get(name)
    builder = tfds.builder(adapter.builder, data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(download_config=download)
    example = next(iter(builder.as_dataset(split="validation")))
    check(adapter.adapt(example), labels, ids)


def _check_voc(out, labels, ids):
  np.testing.assert_array_equal(out["semantic"][..., 0], labels.astype(np.int32))


def _check_cityscapes(out, labels, ids):
  semantic, instance = out["semantic"][..., 0].numpy(), out["instance"][..., 0].numpy()
  assert semantic[0, 0] == 0 and semantic[1, 1] == 13 and semantic[1, 4] == 11
  assert instance[1, 1] == 1 and instance[1, 4] == 6 and instance[0, 0] == 0
  assert semantic[3, 5] == 13 and instance[3, 5] == 0  # crowd


def test_label_out_of_range_in_a_tfds_dataset_stops_with_the_value_and_the_dataset(tmp_path):
  """VOC masks whose values go up to 40 (the dataset has 21 classes and ignore label 255): the
  training and evaluation pipelines both stop at the first such mask, naming value and dataset."""
  import re
  from unittest import mock
  from segjax.data import pipeline, stream
  from conftest import load_config, records_of_mock_data

  data = load_config("deeplabv3_voc").data
  data.update(dict(data_dir=str(tmp_path)))
  with (
    mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", lambda self: True),
    mock.patch.object(stream, "ensure_index", lambda builder: builder),
    mock.patch.object(stream, "records", records_of_mock_data),
    tfds.testing.mock_data(num_examples=2, max_value=40, policy=tfds.testing.MockPolicy.USE_CODE),
  ):
    source = pipeline.get_source(data)
    raw = next(iter(source.builder.as_dataset(split="train")))
    values = np.unique(raw["segmentation"].numpy())
    first_bad = [v for v in values if 21 <= v < 255]
    assert first_bad  # the mock masks do hold labels out of range
    first_batch = {  # evaluation meets the label while it finds the images' sizes
      "train": lambda: pipeline.train_dataset(source, data, local_batch_size=1, seed=0),
      "eval": lambda: pipeline.eval_dataset(source, data, "validation", local_batch_size=1)[0],
    }
    for make in first_batch.values():
      with pytest.raises(
        pipeline.LabelOutOfRange,
        match=r"Label (\d+) in a mask of dataset 'voc2012_segmentation' .*21 "
        r"classes \(0\.\.20\) and ignore label 255",
      ) as error:
        next(pipeline.as_numpy(make().take(1), source))
      assert 21 <= int(re.match(r"Label (\d+)", str(error.value)).group(1)) < 255
    # The check passes labels in range and the ignore label through unchanged.
    d = source.descriptor
    ok = tf.constant([[0, 20], [255, 3]], tf.int32)
    np.testing.assert_array_equal(pipeline.checked_labels(ok, d).numpy(), ok.numpy())
    with pytest.raises(tf.errors.InvalidArgumentError, match="-1"):
      pipeline.checked_labels(tf.constant([[0, -1]], tf.int32), d)
