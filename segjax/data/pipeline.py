"""The tf.data input pipeline: per-process split, augmentation, batching, padded evaluation.

Every process reads its own part of a split (``tfds.even_splits``) and yields *process-local*
batches; the trainer assembles the global batch with ``jax.make_array_from_process_local_data``.
Training examples are a pure function of ``(seed, position in the stream)``: the stream is shuffled
with a fixed seed and each example's augmentation is seeded by its position, so a resumed run that
skips the examples it already consumed sees exactly the batches an uninterrupted run would.
Evaluation pads the last batch with examples marked ``valid = False`` so that every example is
counted exactly once and every process runs the same number of batches.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Iterator

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from segjax.data import catalogue
from segjax.data import folder
from segjax.data import ops
from segjax.data import patches
from segjax.data import shapes
from segjax.data.descriptor import DatasetDescriptor

# JAX owns the accelerators: TensorFlow only runs tf.data on the CPU.
for _kind in ("GPU", "TPU"):
  if tf.config.list_physical_devices(_kind):
    tf.config.set_visible_devices([], _kind)


@dataclasses.dataclass
class Source:
  """A prepared tfds dataset, its descriptor and (catalogue datasets) the adapter of its examples."""
  builder: tfds.core.DatasetBuilder
  descriptor: DatasetDescriptor
  adapt: Callable[[dict], dict] | None = None


def get_source(data_config: ml_collections.ConfigDict) -> Source:
  """Builds (preparing once, offline) the dataset named by ``data_config.name``: ``"shapes"`` (the
  built-in dataset) or ``"folder"`` (the user's images and masks under ``data_config.root``)."""
  if data_config.name == "folder":
    if not data_config.get("root"):
      raise KeyError("config.data.root must name the folder dataset's directory "
                     "(--config.data.root=DATA).")
    builder = prepare_once(lambda: folder.prepare(
        data_config.root, data_dir=data_config.get("data_dir"),
        skip_bad=data_config.get("skip_bad", False)))
    return Source(builder, builder.descriptor())
  if data_config.name.startswith("tfds:"):
    adapter = catalogue.get(data_config.name[len("tfds:"):])
    builder = tfds.builder(adapter.builder, data_dir=data_config.get("data_dir"))
    if not builder.is_prepared():
      raise FileNotFoundError(
          f"tfds dataset {adapter.builder} is not prepared in {builder.data_dir}; prepare it once "
          f"with tfds (tfds build {adapter.builder}, with its manual download if it needs one).")
    return Source(builder, adapter.descriptor, adapter.adapt)
  if data_config.name != "shapes":
    raise KeyError(f"Unknown dataset {data_config.name!r} in config.data.name; available: "
                   f"'shapes', 'folder', {', '.join(repr('tfds:' + n) for n in catalogue.ADAPTERS)}.")
  def make_and_prepare():
    builder = shapes.make_builder(
        data_dir=data_config.get("data_dir"), image_size=data_config.image_size,
        num_train=data_config.num_train, num_validation=data_config.num_validation,
        num_test=data_config.num_test, seed=data_config.dataset_seed,
        max_things=data_config.get("max_things", 6))
    builder.download_and_prepare()
    return builder

  return Source(prepare_once(make_and_prepare), shapes.DESCRIPTOR)


def prepare_once(prepare: Callable):
  """``prepare()`` (which builds *and* prepares a tfds builder: one built before the data exists
  would not see it) on process 0 first and, after all processes meet, on the others: with a shared
  ``data_dir`` they find the dataset written (no two processes write it at once); on local disks
  every host prepares its own copy."""
  import jax  # pylint: disable=import-outside-toplevel
  if jax.process_count() == 1:
    return prepare()
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  result = prepare() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices("segjax: dataset prepared by process 0")
  return result if jax.process_index() == 0 else prepare()


def decode(source: Source, example):
  """A stored example in the one format: ``image``, int32 ``semantic`` (and ``instance`` and
  ``panoptic`` when the dataset has instances, ``name`` when it has names)."""
  if source.adapt is not None:
    example = source.adapt(example)
  return _decode(example, source.descriptor)


def _decode(example, descriptor: DatasetDescriptor):
  out = {"image": example["image"], "semantic": tf.cast(example["semantic"][..., 0], tf.int32)}
  if "name" in example:
    out["name"] = example["name"]
  if "instance" in example:
    out["instance"] = tf.cast(example["instance"][..., 0], tf.int32)
    out["panoptic"] = out["semantic"] * descriptor.label_divisor + out["instance"]
  return out


def process_split(split: str, process_index: int, process_count: int) -> str:
  return tfds.even_splits(split, n=process_count, drop_remainder=False)[process_index]


def train_dataset(source: Source, data_config, *, local_batch_size: int, seed: int,
                  start_step: int = 0, process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
  """Endless process-local training batches, starting after ``start_step`` consumed batches.

  ``data_config.process_data`` says how processes share the data: ``"split"`` (default) — each
  reads and shuffles its own ``1/process_count`` of the split (reading scales with the cluster);
  ``"stream"`` — every process walks the same shuffled stream of the whole split and keeps its
  own ``local_batch_size`` examples of each global batch, so the global batches (and the
  training run) do not depend on the number of processes, at the price of every process reading
  and decoding every example (augmentation, the expensive part, stays per example).
  """
  mode = data_config.get("process_data", "split")
  if mode not in ("split", "stream"):
    raise ValueError(f"data.process_data={mode!r} is not 'split' or 'stream'.")
  stream = mode == "stream"
  if stream:  # one global stream: no process-dependent split or seed
    position, position_count = process_index, process_count
    process_index, process_count = 0, 1
  split = process_split(data_config.train_split, process_index, process_count)
  ds = source.builder.as_dataset(split=split, shuffle_files=False,
                                 read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False))
  ds = ds.map(lambda ex: decode(source, ex), num_parallel_calls=tf.data.AUTOTUNE)
  ignore = source.descriptor.ignore_label
  patch_size = data_config.get("patch_size")
  if patch_size:  # a grid of (overlapping) patches of every image, instead of whole images
    size, stride = tuple(patch_size), tuple(data_config.get("patch_stride") or patch_size)
    ds = ds.flat_map(lambda ex: patches.tf_grid_patches(ex, size, stride, ignore))
    if data_config.get("min_labelled_fraction", 0.0) > 0:
      ds = ds.filter(lambda ex: patches.labelled_fraction(ex, ignore)
                     >= data_config.min_labelled_fraction)
  if data_config.get("cache", True):
    ds = ds.cache()
  if patch_size and data_config.get("class_balanced", 0.0) > 0:
    ds = patches.class_balanced(ds, source.descriptor.num_classes, seed=seed + process_index,
                                fraction=data_config.class_balanced,
                                classes=present_classes(ds, source.descriptor.num_classes))
  else:
    ds = ds.repeat()
  ds = ds.shuffle(data_config.shuffle_buffer, seed=seed + process_index,
                  reshuffle_each_iteration=True)
  if stream:  # keep this process's slice of every global batch
    global_batch = local_batch_size * position_count
    ds = ds.enumerate().skip(start_step * global_batch)
    ds = ds.filter(lambda index, _: (index // local_batch_size) % position_count == position)
  else:
    ds = ds.enumerate().skip(start_step * local_batch_size)

  augment = ops.build(data_config.get("train_pp", ""), op_context(source, data_config))

  def preprocess(index, example):
    example_seed = tf.stack([tf.constant(seed, tf.int64) * 1000003 + process_index, index])
    example = augment(unit_image(example, data_config), example_seed)
    return training_example(standardize_image(example, data_config))

  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  check_train_shape(ds.element_spec["image"].shape, data_config)
  ds = ds.batch(local_batch_size, drop_remainder=True)
  return ds.prefetch(data_config.get("prefetch", 2))


def training_example(example):
  """The arrays the train step gets: every numeric entry (names and patch positions dropped)."""
  return {k: v for k, v in example.items()
          if v.dtype != tf.string and k not in ("patch_position", "labelled")}


def check_train_shape(shape, data_config):
  """The training images must have one static size, ``data.crop_size``, after ``data.train_pp``."""
  crop = tuple(data_config.crop_size)
  if tuple(shape[:2]) != crop:
    raise ValueError(f"config.data.train_pp={data_config.get('train_pp', '')!r} gives training "
                     f"images of size {tuple(shape[:2])} but config.data.crop_size is {crop}: end "
                     f"the chain with random_crop({crop[0]}) (or resize) at that size, or change "
                     "crop_size.")


def op_context(source: Source, data_config) -> ops.Context:
  """What preprocessing ops read besides the example: the descriptor; padding with the mean."""
  return ops.Context(descriptor=source.descriptor, image_fill=tuple(data_config.mean))


def eval_dataset(source: Source, data_config, split: str, *, local_batch_size: int,
                 process_index: int = 0, process_count: int = 1) -> tuple[tf.data.Dataset, int]:
  """Process-local evaluation batches of ``split`` padded to equal counts; returns (dataset, batches).

  Each example carries ``valid`` (False for padding); every process yields the same number of
  batches, ``ceil(max process share / local batch)``.
  """
  info_splits = source.builder.info.splits
  if split not in info_splits:
    raise KeyError(f"Dataset {source.builder.name!r} has no split {split!r}; "
                   f"it has {sorted(info_splits.keys())}.")
  counts = [info_splits[process_split(split, i, process_count)].num_examples
            for i in range(process_count)]
  num_batches = math.ceil(max(counts) / local_batch_size)
  mine = counts[process_index]
  ds = source.builder.as_dataset(split=process_split(split, process_index, process_count),
                                 shuffle_files=False)
  eval_pp = data_config.get("eval_pp", "")
  if data_config.get("eval_pad_to"):  # images of several sizes: pad to one (labels: ignore)
    eval_pp += f"|pad_to({tuple(data_config.eval_pad_to)})"
  process = ops.build(eval_pp, op_context(source, data_config))

  def prepare(ex):
    ex = process(unit_image(decode(source, ex), data_config), tf.constant([0, 0], tf.int64))
    ex = standardize_image(ex, data_config)
    ex.pop("name", None)
    return {**ex, "valid": True}

  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  padding = num_batches * local_batch_size - mine
  if padding:
    blank = ds.take(1).map(lambda ex: _blank_like(ex, source.descriptor.ignore_label))
    ds = ds.concatenate(blank.repeat(padding))
  ds = ds.batch(local_batch_size, drop_remainder=True)
  return ds.prefetch(2), num_batches


def unit_image(example, data_config):
  """The image as float32 in [0, 1] with ``data.channels`` channels (grey images feed 3-channel
  models by repetition; RGB(A) feeds 1-channel models as its mean), from ``data.normalization``:
  ``"mean_std"`` divides by the dtype's maximum, ``"minmax"`` and ``"percentile"``
  (``data.percentiles``) stretch each image (`ops.to_unit`)."""
  image = example["image"]
  scale = 65535.0 if image.dtype == tf.uint16 else 255.0
  image = ops.to_unit(image, scale=scale, mode=data_config.get("normalization", "mean_std"),
                      percentiles=tuple(data_config.get("percentiles", (1.0, 99.0))))
  channels = data_config.get("channels", 3)
  if channels == 3 and image.shape[-1] == 1:
    image = tf.tile(image, [1, 1, 3])
  elif channels == 1 and image.shape[-1] != 1:
    image = tf.reduce_mean(image[..., :3], axis=-1, keepdims=True)
  return {**example, "image": image}


def standardize_image(example, data_config):
  """``(image - data.mean) / data.std``: the last step before the model."""
  return {**example, "image": ops.standardize(example["image"], data_config.mean, data_config.std)}


def prepare_image(example, data_config):
  """`unit_image` then `standardize_image`: an example (or a file) as the model sees it. The
  settings are saved with the run, so prediction uses the same."""
  return standardize_image(unit_image(example, data_config), data_config)


def present_classes(ds: tf.data.Dataset, num_classes: int) -> list[int]:
  """The classes that occur in the (finite) dataset ``ds``, from one pass over it."""
  def add(seen, example):
    labels = tf.reshape(example["semantic"], [-1])
    labels = tf.boolean_mask(labels, (labels >= 0) & (labels < num_classes))
    return seen | (tf.math.bincount(labels, minlength=num_classes, maxlength=num_classes) > 0)
  seen = ds.reduce(tf.zeros([num_classes], tf.bool), add).numpy()
  return [int(c) for c in np.flatnonzero(seen)]


def _blank_like(example, ignore_label):
  out = {}
  for key, value in example.items():
    if key == "valid":
      out[key] = tf.constant(False)
    elif key in ("semantic", "panoptic"):
      out[key] = tf.fill(tf.shape(value), tf.cast(ignore_label, value.dtype))
    else:
      out[key] = tf.zeros_like(value)
  return out


def as_numpy(ds: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
  return iter(tfds.as_numpy(ds))
