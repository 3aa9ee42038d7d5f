import numpy as np
import pytest
import tensorflow as tf

from segjax.data import ops
from segjax.data import pipeline
from segjax.data import shapes


def test_scenes_are_deterministic_and_labels_agree_with_each_other():
  a = shapes.render_scene(np.random.default_rng([1, 2]), 48)
  b = shapes.render_scene(np.random.default_rng([1, 2]), 48)
  c = shapes.render_scene(np.random.default_rng([1, 3]), 48)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[0], c[0])
  for seed in range(20):
    image, semantic, instance = shapes.render_scene(np.random.default_rng(seed), 48)
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    is_thing = np.isin(semantic, shapes.DESCRIPTOR.thing_classes)
    # Instance masks lie exactly on thing pixels, each instance inside one semantic class.
    np.testing.assert_array_equal(instance > 0, is_thing)
    ids = np.unique(instance[instance > 0])
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))  # numbered 1..N
    for i in ids:
      assert len(np.unique(semantic[instance == i])) == 1
    assert semantic.max() < shapes.DESCRIPTOR.num_classes


def test_prepared_dataset_matches_renderer_and_has_panoptic(config):
  source = pipeline.get_source(config.data)
  assert source.descriptor.class_names == ("stripes", "speckle", "disc", "triangle", "square")
  counts = {s: source.builder.info.splits[s].num_examples for s in ("train", "validation", "test")}
  assert counts == {"train": 24, "validation": 10, "test": 6}
  ds, _ = pipeline.eval_dataset(source, config.data, "validation", local_batch_size=10)
  batch = next(pipeline.as_numpy(ds))
  np.testing.assert_array_equal(batch["panoptic"],
                                batch["semantic"] * 1000 + batch["instance"])
  # Stuff pixels carry instance 0 in the panoptic map.
  stuff = np.isin(batch["semantic"], source.descriptor.stuff_classes)
  assert np.all(batch["panoptic"][stuff] % 1000 == 0)


def _example(h=6, w=8):
  image = tf.reshape(tf.range(h * w * 3, dtype=tf.float32), (h, w, 3))
  semantic = tf.reshape(tf.range(h * w, dtype=tf.int32) % 5, (h, w))
  return {"image": image, "semantic": semantic, "instance": semantic * 2}


def test_random_crop_pads_labels_with_ignore_and_moves_image_and_labels_together():
  ex = ops.random_crop(_example(), tf.constant([3, 4], tf.int64), (10, 4), ignore_label=255)
  assert ex["image"].shape == (10, 4, 3)
  sem = ex["semantic"].numpy()
  np.testing.assert_array_equal(sem[6:], 255)  # padded rows
  np.testing.assert_array_equal(ex["instance"].numpy()[6:], 0)
  # Each kept pixel's label still corresponds to its image value (image value / 3 = pixel index).
  index = (ex["image"].numpy()[:6, :, 0] / 3).astype(int)
  np.testing.assert_array_equal(sem[:6], index % 5)


def test_flip_is_joint_and_scale_uses_nearest_for_labels():
  ex = _example()
  for seed in range(4):
    flipped = ops.random_flip(ex, tf.constant([seed, 0], tf.int64))
    index = (flipped["image"].numpy()[..., 0] / 3).astype(int)
    np.testing.assert_array_equal(flipped["semantic"].numpy(), index % 5)
  scaled = ops.random_scale(ex, tf.constant([0, 1], tf.int64), (2.0, 2.0))
  assert scaled["semantic"].shape == (12, 16)
  assert set(np.unique(scaled["semantic"].numpy())) <= set(range(5))  # no interpolated labels


def test_augmentation_inside_tf_data_is_reproducible():
  ds = tf.data.Dataset.from_tensors(_example()).repeat(3).enumerate()
  augment = lambda i, ex: ops.train_augment(ex, tf.stack([tf.constant(7, tf.int64), i]),
                                            crop_size=(5, 5), scale_range=(0.5, 1.5), flip=True,
                                            ignore_label=255)
  first = [e["semantic"].numpy() for e in ds.map(augment)]
  second = [e["semantic"].numpy() for e in ds.map(augment)]
  for x, y in zip(first, second):
    np.testing.assert_array_equal(x, y)


def test_eval_padding_marks_every_example_once(config):
  source = pipeline.get_source(config.data)
  names = []
  for process in range(3):  # 10 examples over 3 processes, local batch 3
    ds, num_batches = pipeline.eval_dataset(source, config.data, "validation", local_batch_size=3,
                                            process_index=process, process_count=3)
    batches = list(pipeline.as_numpy(ds))
    assert len(batches) == num_batches == 2  # max share is 4 examples
    for batch in batches:
      for i in np.flatnonzero(batch["valid"]):
        names.append(batch["image"][i].tobytes())
      assert np.all(batch["semantic"][~batch["valid"]] == 255)
  assert len(names) == 10 and len(set(names)) == 10


def test_unknown_dataset_and_split_are_named(config):
  config.data.name = "nope"
  with pytest.raises(KeyError, match="Unknown dataset 'nope'"):
    pipeline.get_source(config.data)
  config.data.name = "shapes"
  source = pipeline.get_source(config.data)
  with pytest.raises(KeyError, match="no split 'valid'"):
    pipeline.eval_dataset(source, config.data, "valid", local_batch_size=2)
