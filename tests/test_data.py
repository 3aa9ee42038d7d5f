import cv2
import numpy as np
import pytest
import tensorflow as tf

from segjax import registry
from segjax.data import ops
from segjax.data.shapes import DESCRIPTOR
from segjax.data import intensity
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


def test_multiscale_variant_sizes_thin_things_and_names():
  # Radii set the things' areas; thin things are long and narrow; the default scenes and names
  # stay those of the quickstart's prepared dataset.
  tiny_areas, thin_ratios = [], []
  for seed in range(6):
    _, semantic, instance = shapes.render_scene(
      np.random.default_rng(seed), 192, 8, radii=(0.02, 0.02)
    )
    tiny_areas += [int(np.sum(instance == i)) for i in range(1, instance.max() + 1)]
    _, _, instance = shapes.render_scene(
      np.random.default_rng(seed), 192, 8, radii=(0.1, 0.1), thin=1.0
    )
    for i in range(1, instance.max() + 1):
      ys, xs = np.nonzero(instance == i)
      if len(ys) > 100 and 0 < ys.min() and ys.max() < 191 and 0 < xs.min() and xs.max() < 191:
        (_, _), (w, h), _ = cv2.minAreaRect(np.stack([xs, ys], -1).astype(np.float32))
        thin_ratios.append(max(w, h) / max(min(w, h), 1.0))
  # radius 3.84 px: a disc of ~46 px, a square of side 1.1 * 3.84 * sqrt(2) (~36 px), a triangle
  # of radius 4.8 (~30 px); occlusion and the frame only remove pixels
  assert tiny_areas and max(tiny_areas) <= 60
  assert thin_ratios and min(thin_ratios) >= 2.5  # stretched 3-10x along, squeezed as much across
  assert shapes.ShapesConfig(image_size=64, num_train=3000, max_things=8).name == (
    "s64_n3000-200-200_t8_seed0"
  )
  assert shapes.ShapesConfig(image_size=192, radii=(0.01, 0.5), thin=0.25).name == (
    "s192_n2000-200-200_t6_r0.01-0.5_thin0.25_seed0"
  )
  with pytest.raises(ValueError, match=r"config.data.radii=\(0.5, 0.1\)"):
    shapes.ShapesConfig(radii=(0.5, 0.1))
  with pytest.raises(ValueError, match=r"config.data.thin=2"):
    shapes.ShapesConfig(thin=2)


def test_prepared_dataset_matches_renderer_and_has_panoptic(config):
  source = pipeline.get_source(config.data)
  assert source.descriptor.class_names == ("stripes", "speckle", "disc", "triangle", "square")
  counts = {s: source.builder.info.splits[s].num_examples for s in ("train", "validation", "test")}
  assert counts == {"train": 24, "validation": 10, "test": 6}
  ds, _ = pipeline.eval_dataset(source, config.data, "validation", local_batch_size=10)
  batch = next(pipeline.as_numpy(ds))
  np.testing.assert_array_equal(batch["panoptic"], batch["semantic"] * 1000 + batch["instance"])
  # Stuff pixels carry instance 0 in the panoptic map.
  stuff = np.isin(batch["semantic"], source.descriptor.stuff_classes)
  assert np.all(batch["panoptic"][stuff] % 1000 == 0)


def _example(h=6, w=8):
  image = tf.reshape(tf.range(h * w * 3, dtype=tf.float32), (h, w, 3))
  semantic = tf.reshape(tf.range(h * w, dtype=tf.int32) % 5, (h, w))
  return {"image": image, "semantic": semantic, "instance": semantic * 2}


CONTEXT = ops.Context(descriptor=DESCRIPTOR, image_fill=(0.5, 0.25, 0.125))


def _op(spec):
  return registry.lookup("pp", spec)()


def test_random_crop_pads_labels_with_ignore_and_the_image_with_the_mean():
  ex = _op("random_crop((10, 4))")(_example(), tf.constant([3, 4], tf.int64), CONTEXT)
  assert ex["image"].shape == (10, 4, 3)
  sem = ex["semantic"].numpy()
  np.testing.assert_array_equal(sem[6:], 255)  # padded rows
  np.testing.assert_array_equal(ex["instance"].numpy()[6:], 0)
  np.testing.assert_array_equal(
    ex["image"].numpy()[6:], np.broadcast_to([0.5, 0.25, 0.125], (4, 4, 3))
  )
  # Each kept pixel's label still corresponds to its image value (image value / 3 = pixel index).
  index = (ex["image"].numpy()[:6, :, 0] / 3).astype(int)
  np.testing.assert_array_equal(sem[:6], index % 5)


def test_reflect_padding_mirrors_the_image_as_far_as_needed_and_ignores_the_labels():
  """A 6x8 image reflected to 15x20 (further than one mirror: rows 0..5, 4..0, 1..4 as numpy's
  "reflect" mode repeated) and to the next multiple of 4x12; labels ignored, panoptic void."""
  example = {**_example(), "panoptic": _example()["semantic"] * 1000}
  context = ops.Context(descriptor=DESCRIPTOR, image_fill=CONTEXT.image_fill)
  padded = _op("pad_to((15, 20), mode='reflect')")(example, tf.constant([0, 0], tf.int64), context)
  rows = [0, 1, 2, 3, 4, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
  columns = [0, 1, 2, 3, 4, 5, 6, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5]
  image = _example()["image"].numpy()
  np.testing.assert_array_equal(padded["image"].numpy(), image[rows][:, columns])
  np.testing.assert_array_equal(
    padded["image"].numpy(), np.pad(image, ((0, 9), (0, 12), (0, 0)), mode="reflect")
  )
  semantic = padded["semantic"].numpy()
  assert (semantic[:6, :8] == _example()["semantic"].numpy()).all()
  assert (semantic[6:] == 255).all() and (semantic[:, 8:] == 255).all()
  assert (padded["panoptic"].numpy()[6:] == 255 * DESCRIPTOR.label_divisor).all()
  multiple = _op("pad_to_multiple((4, 12), mode='reflect')")(
    example, tf.constant([0, 0], tf.int64), context
  )
  np.testing.assert_array_equal(multiple["image"].numpy(), image[rows[:8]][:, columns[:12]])
  constant = _op("pad_to_multiple(5)")(example, tf.constant([0, 0], tf.int64), context)
  assert constant["image"].shape == (10, 10, 3)
  np.testing.assert_array_equal(
    constant["image"].numpy()[6:], np.broadcast_to(CONTEXT.image_fill, (4, 10, 3))
  )
  with pytest.raises(ValueError, match="mode='mirror': use one of 'constant', 'reflect'"):
    _op("pad_to(8, mode='mirror')")


def test_center_crop_takes_the_central_window_and_pads_what_is_smaller():
  """6x8 -> (4, 4): rows 1..4, columns 2..5; -> (4, 10): padded to 6x10 first (one ignored column
  each side, as pad_example places it), then rows 1..4."""
  ex = _op("center_crop((4, 4))")(_example(), tf.constant([0, 0], tf.int64), CONTEXT)
  np.testing.assert_array_equal(ex["semantic"].numpy(), _example()["semantic"].numpy()[1:5, 2:6])
  np.testing.assert_array_equal(ex["image"].numpy(), _example()["image"].numpy()[1:5, 2:6])
  wide = _op("center_crop((4, 10))")(_example(), tf.constant([0, 0], tf.int64), CONTEXT)
  padded = ops.pad_example(_example(), (6, 10), ignore_label=255, image_fill=CONTEXT.image_fill)
  np.testing.assert_array_equal(wide["semantic"].numpy(), padded["semantic"].numpy()[1:5])
  assert (wide["semantic"].numpy() == 255).sum() == 8  # the two padded columns, 4 rows


def test_geometric_ops_move_every_map_together_and_scale_uses_nearest_for_labels():
  ex = _example()
  ex["extra_map"] = tf.cast(ex["semantic"], tf.float32) * 10  # a target made by an earlier op
  for spec in ("flip_lr", "random_rot90", "random_crop(4)", "random_scale(0.5, 1.5)"):
    for seed in range(4):
      out = _op(spec)(ex, tf.constant([seed, 0], tf.int64), CONTEXT)
      index = np.round(out["image"].numpy()[..., 0] / 3).astype(int)
      if spec.startswith("random_scale"):
        assert set(np.unique(out["semantic"].numpy())) <= set(range(5))  # no interpolated labels
        continue
      np.testing.assert_array_equal(out["semantic"].numpy(), index % 5, err_msg=spec)
      np.testing.assert_array_equal(out["extra_map"].numpy(), (index % 5) * 10.0, err_msg=spec)
  scaled = _op("random_scale(2.0, 2.0)")(ex, tf.constant([0, 1], tf.int64), CONTEXT)
  assert scaled["semantic"].shape == (12, 16) and scaled["semantic"].dtype == tf.int32


def test_photometric_changes_the_image_only_within_unit_range():
  ex = {
    "image": tf.random.stateless_uniform((8, 8, 3), [1, 2]),
    "semantic": tf.zeros((8, 8), tf.int32),
  }
  out = _op("photometric(0.3)")(ex, tf.constant([5, 6], tf.int64), CONTEXT)
  image = out["image"].numpy()
  assert 0.0 <= image.min() and image.max() <= 1.0 and not np.allclose(image, ex["image"])
  np.testing.assert_array_equal(out["semantic"].numpy(), 0)


def test_boundary_distance_hand_computed():
  semantic = np.zeros((5, 7), np.int32)
  semantic[:, 4:] = 1
  semantic[0, 0] = 255  # ignored: no boundary of its own
  out = _op("boundary_distance(3)")(
    {"semantic": tf.constant(semantic)}, tf.constant([0, 0], tf.int64), CONTEXT
  )["boundary_distance"].numpy()
  # Columns 3 and 4 touch the other class: 0; then 1, 2, 3 (the cap) away from them.
  np.testing.assert_array_equal(out[2], [3, 2, 1, 0, 0, 1, 2])
  np.testing.assert_array_equal(out[0], [3, 2, 1, 0, 0, 1, 2])


def test_chains_are_reproducible_eagerly_and_inside_tf_data():
  chain = ops.build("random_scale(0.5, 1.5)|random_crop(5)|flip_lr|photometric(0.2)", CONTEXT)
  ds = tf.data.Dataset.from_tensors(_example()).repeat(3).enumerate()
  augment = lambda i, ex: chain(ex, tf.stack([tf.constant(7, tf.int64), i]))
  first = [e["semantic"].numpy() for e in ds.map(augment)]
  second = [e["semantic"].numpy() for e in ds.map(augment)]
  eager = [augment(tf.constant(i, tf.int64), _example())["semantic"].numpy() for i in range(3)]
  for x, y, z in zip(first, second, eager):
    np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(x, z)
  assert not all(np.array_equal(first[0], f) for f in first[1:])  # examples differ


def test_unknown_ops_and_bad_arguments_are_named():
  with pytest.raises(KeyError, match="Unknown preprocessing op 'flip'.*flip_lr"):
    ops.build("random_crop(4)|flip", CONTEXT)
  with pytest.raises(ValueError, match="random_scale.*0 < low <= high"):
    ops.build("random_scale(2.0, 1.0)", CONTEXT)
  with pytest.raises(ValueError, match="random_crop.*size"):
    ops.build("random_crop((4, 4, 4))", CONTEXT)


def test_train_pp_must_end_in_the_crop_size(config):
  config.data.train_pp = "flip_lr"  # 32x32 scenes but a 24x24 crop_size
  config.data.crop_size = (24, 24)
  source = pipeline.get_source(config.data)
  with pytest.raises(
    ValueError,
    match=r"gives training images of size \(32, 32\).*crop_size is "
    r"\(24, 24\)",
  ):
    pipeline.train_dataset(source, config.data, local_batch_size=2, seed=0)


@pytest.mark.parametrize("mode", ["split", "stream"])
@pytest.mark.parametrize("units", ["images", "patches"])
def test_resume_at_step_s_equals_the_uninterrupted_stream_without_reading_before_it(
  config, mode, units
):
  """Process 1 of 2: the batches from step 30 on of a stream started at step 30 equal those of
  the uninterrupted stream (every array, augmentation included), and starting there reads only
  what it yields (the uninterrupted stream reads 30 x 3 records first). With patches: a 16x16 grid
  of each 32x32 scene, a labelled-fraction filter and class-balanced sampling. One epoch of
  whole images is a permutation of the process's examples."""
  from unittest import mock
  from segjax.data import stream

  config.data.process_data = mode
  if units == "patches":
    config.data.update(
      dict(
        patch_size=(16, 16),
        patch_stride=(16, 16),
        crop_size=(16, 16),
        min_labelled_fraction=0.5,
        class_balanced=0.5,
        train_pp="random_crop(16)|flip_lr",
      )
    )
  source = pipeline.get_source(config.data)
  reads = tf.Variable(0, dtype=tf.int64)  # records read, counted inside the pipeline
  original = stream.read

  def counted(records, ds):
    def count(*element):
      with tf.control_dependencies([reads.assign_add(1)]):
        return tuple(tf.identity(x) for x in element)

    return original(records, ds.map(count))

  def batches(start_step, count):
    ds = pipeline.train_dataset(
      source,
      config.data,
      local_batch_size=3,
      seed=4,
      start_step=start_step,
      process_index=1,
      process_count=2,
    )
    return [b for _, b in zip(range(count), pipeline.as_numpy(ds, source))]

  straight = batches(0, 34)
  with mock.patch.object(stream, "read", counted):
    resumed = batches(30, 4)
  assert 0 < int(reads.numpy()) < 30 * 3, int(reads.numpy())
  for a, b in zip(straight[30:], resumed):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_each_epoch_of_the_stream_is_a_permutation_and_class_balance_draws_the_class():
  from segjax.data import stream

  def unit_of(ks, units, **kwargs):
    ks = tf.data.Dataset.from_tensor_slices(tf.constant(ks, tf.int64))
    return np.array(list(ks.map(lambda k: stream.unit_of(k, units, **kwargs)).as_numpy_iterator()))

  units = stream.Units(np.arange(10, 20))
  drawn = unit_of(range(30), units, seed=3)
  epochs = drawn.reshape(3, 10)
  assert all(sorted(e) == list(range(10)) for e in epochs)  # unit numbers 0..9, each once
  assert len({tuple(e) for e in epochs}) == 3  # a new order every epoch
  again = unit_of([25], units, seed=3)
  assert again[0] == drawn[25]  # element k alone: the same unit
  # Class-balanced: class 1 is in unit 7 only; half the draws pick a class (1 of 2) first.
  units = stream.Units(np.arange(10), classes={0: np.arange(10), 1: np.array([7])})
  drawn = unit_of(range(4000), units, seed=0, class_balanced=0.5)
  share = np.mean(drawn == 7)  # 0.5 x 1/10 + 0.5 x (1/2 + 1/2 x 1/10) = 0.325
  assert 0.30 < share < 0.35, share


def test_eval_padding_marks_every_example_once(config):
  source = pipeline.get_source(config.data)
  names = []
  for process in range(3):  # 10 examples over 3 processes, local batch 3
    ds, num_batches = pipeline.eval_dataset(
      source, config.data, "validation", local_batch_size=3, process_index=process, process_count=3
    )
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


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("stored", [1, 3])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("normalization", ["mean_std", "minmax", "percentile"])
def test_unit_image_for_every_depth_layout_channel_count_and_normalisation(
  dtype, stored, channels, normalization
):
  """8/16-bit, grey/colour images fed to 1- or 3-channel models: the expected [0, 1] values."""
  import ml_collections

  top = np.iinfo(dtype).max
  # Channel c of pixel i: a ramp over a quarter of the range, brighter per channel.
  ramp = np.linspace(0, top // 4, 101).round()
  image = np.stack([ramp + c * (top // 8) for c in range(stored)], -1).reshape(1, 101, stored)
  image = image.astype(dtype)
  config = ml_collections.ConfigDict(
    dict(channels=channels, normalization=normalization, percentiles=(1.0, 99.0))
  )
  out = pipeline.unit_image({"image": tf.constant(image)}, config)["image"].numpy()
  assert out.shape == (1, 101, channels) and out.dtype == np.float32
  values = image.astype(np.float64)
  if stored == 3 and channels == 1:  # a colour image for a grey model: its mean, then normalised
    values = values.mean(-1, keepdims=True)
  if normalization == "mean_std":
    unit = values / top
  else:
    flat = np.sort(values.reshape(-1))
    pick = lambda p: flat[int(round((flat.size - 1) * p / 100))]
    low, high = (flat[0], flat[-1]) if normalization == "minmax" else (pick(1.0), pick(99.0))
    unit = np.clip((values - low) / (high - low), 0, 1)
  expected = np.repeat(unit, 3, -1) if stored == 1 and channels == 3 else unit
  np.testing.assert_allclose(out, expected, atol=1e-6)
  assert out.min() >= 0.0 and out.max() <= 1.0
  # Prediction's numpy path (no TensorFlow) gives the pipeline's float32 values bit for bit, and
  # so after standardisation.
  np.testing.assert_array_equal(intensity.unit_image(image, config), out)
  config.mean, config.std = (0.4, 0.5, 0.6)[:channels], (0.2, 0.25, 0.3)[:channels]
  tf_prepared = pipeline.prepare_image({"image": tf.constant(image)}, config)["image"].numpy()
  np.testing.assert_array_equal(intensity.prepare_image(image, config), tf_prepared)
