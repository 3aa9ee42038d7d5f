"""Catalogue adapters on tfds.testing.mock_data (random examples with the real features; no
download) against the mappings written out here, and COCO panoptic on a hand-built example."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from segjax.data import catalogue

EXPECTED = {
    "oxford_iiit_pet": ("segmentation_mask",
                        lambda m: np.select([m == 1, m == 2], [1, 0], 255)),
    "cityscapes": ("segmentation_label",
                   lambda m: np.where(m < 34, catalogue.CITYSCAPES_TABLE[np.minimum(m, 33)], 255)),
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


def test_cityscapes_train_ids():
  table = catalogue.CITYSCAPES_TABLE
  assert (table[7], table[26], table[33], table[0], table[6]) == (0, 13, 18, 255, 255)
  assert sorted(set(table.tolist()) - {255}) == list(range(19))


def test_coco_panoptic_adapter_hand_built_and_on_mock_data():
  adapter = catalogue.get("coco_panoptic")
  ids = np.array([[0, 5, 5], [300, 300, 70000]])  # 0 = unlabelled
  rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
  example = {"image": tf.zeros((2, 3, 3), tf.uint8), "panoptic_image": tf.constant(rgb),
             "panoptic_objects": {"id": tf.constant([300, 5, 70000], tf.int64),
                                  "label": tf.constant([3, 100, 7], tf.int64),
                                  "is_crowd": tf.constant([False, False, True])}}
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
