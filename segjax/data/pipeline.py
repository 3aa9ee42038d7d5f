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
from typing import Iterator

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from segjax.data import ops
from segjax.data import shapes
from segjax.data.descriptor import DatasetDescriptor

# JAX owns the accelerators: TensorFlow only runs tf.data on the CPU.
for _kind in ("GPU", "TPU"):
  if tf.config.list_physical_devices(_kind):
    tf.config.set_visible_devices([], _kind)


@dataclasses.dataclass
class Source:
  """A prepared tfds dataset and its descriptor."""
  builder: tfds.core.DatasetBuilder
  descriptor: DatasetDescriptor


def get_source(data_config: ml_collections.ConfigDict) -> Source:
  """Builds (preparing once, offline) the dataset named by ``data_config.name``."""
  if data_config.name != "shapes":
    raise KeyError(f"Unknown dataset {data_config.name!r} in config.data.name; available: 'shapes'.")
  builder = shapes.make_builder(
      data_dir=data_config.get("data_dir"), image_size=data_config.image_size,
      num_train=data_config.num_train, num_validation=data_config.num_validation,
      num_test=data_config.num_test, seed=data_config.dataset_seed,
      max_things=data_config.get("max_things", 6))
  builder.download_and_prepare()
  return Source(builder, shapes.DESCRIPTOR)


def _decode(example, descriptor: DatasetDescriptor):
  out = {"image": example["image"], "semantic": tf.cast(example["semantic"][..., 0], tf.int32)}
  if "instance" in example:
    out["instance"] = tf.cast(example["instance"][..., 0], tf.int32)
    out["panoptic"] = out["semantic"] * descriptor.label_divisor + out["instance"]
  return out


def process_split(split: str, process_index: int, process_count: int) -> str:
  return tfds.even_splits(split, n=process_count, drop_remainder=False)[process_index]


def train_dataset(source: Source, data_config, *, local_batch_size: int, seed: int,
                  start_step: int = 0, process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
  """Endless process-local training batches, starting after ``start_step`` consumed batches."""
  split = process_split(data_config.train_split, process_index, process_count)
  ds = source.builder.as_dataset(split=split, shuffle_files=False,
                                 read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False))
  ds = ds.map(lambda ex: _decode(ex, source.descriptor), num_parallel_calls=tf.data.AUTOTUNE)
  if data_config.get("cache", True):
    ds = ds.cache()
  ds = ds.repeat().shuffle(data_config.shuffle_buffer, seed=seed + process_index,
                           reshuffle_each_iteration=True)
  ds = ds.enumerate().skip(start_step * local_batch_size)
  crop = tuple(data_config.crop_size)
  ignore = source.descriptor.ignore_label

  def preprocess(index, example):
    example = ops.normalize(example, data_config.mean, data_config.std)
    example_seed = tf.stack([tf.constant(seed, tf.int64) * 1000003 + process_index, index])
    return ops.train_augment(example, example_seed, crop_size=crop,
                             scale_range=tuple(data_config.scale_range), flip=data_config.flip,
                             ignore_label=ignore)

  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(local_batch_size, drop_remainder=True)
  return ds.prefetch(data_config.get("prefetch", 2))


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
  ds = ds.map(lambda ex: {**ops.normalize(_decode(ex, source.descriptor), data_config.mean,
                                          data_config.std), "valid": True},
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  padding = num_batches * local_batch_size - mine
  if padding:
    blank = ds.take(1).map(lambda ex: _blank_like(ex, source.descriptor.ignore_label))
    ds = ds.concatenate(blank.repeat(padding))
  ds = ds.batch(local_batch_size, drop_remainder=True)
  return ds.prefetch(2), num_batches


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
