"""The tf.data input pipeline: per-process split, augmentation, batching, padded evaluation.

Every process reads its own part of a split (``tfds.even_splits``) and yields *process-local*
batches; the trainer assembles the global batch with ``jax.make_array_from_process_local_data``.
Training examples are a pure function of ``(seed, position in the stream)`` (`segjax.data.stream`):
each epoch is a seeded permutation computed from the index, examples are read by record number, and
each example's augmentation is seeded by its position, so a resumed run starts where it stopped
without reading what came before and sees exactly the batches an uninterrupted run would.
Evaluation batches images of one size together, each at its own size, and completes the last batch
of each size with blank examples marked ``valid = False``: every example is counted exactly once,
and every process runs the same shapes in the same order.
"""

from __future__ import annotations

import ast
import math
import re
from typing import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from segjax.data import datasets
from segjax.data import intensity
from segjax.data import ops
from segjax.data import shapes
from segjax.data import stream
from segjax.data.datasets import DataInfo, Source
from segjax.data.descriptor import DatasetDescriptor

# Datasets by name live in segjax.data.datasets; these three are read here too.
get_source, dataset_info, has_instances = (
  datasets.get_source,
  datasets.dataset_info,
  datasets.has_instances,
)

# JAX owns the accelerators: TensorFlow only runs tf.data on the CPU.
for _kind in ("GPU", "TPU"):
  if tf.config.list_physical_devices(_kind):
    tf.config.set_visible_devices([], _kind)


def decode(source: Source, example):
  """A stored example in the one format: ``image``, int32 ``semantic`` (and ``instance`` and
  ``panoptic`` when the dataset has instances, ``name`` when it has names)."""
  if source.adapt is not None:
    example = source.adapt(example)
  return _decode(example, source.descriptor)


class LabelOutOfRange(ValueError):
  """A mask holds a label that is neither one of the dataset's classes nor its ignore label."""


_RANGE_MARK = "segjax label out of range"


def checked_labels(semantic: tf.Tensor, descriptor: DatasetDescriptor) -> tf.Tensor:
  """``semantic`` (int32), after a check that every value is a class id of ``descriptor`` or its
  ignore label; iterating the dataset (:func:`as_numpy`) raises :class:`LabelOutOfRange`."""
  n, ignore = descriptor.num_classes, descriptor.ignore_label
  bad = tf.boolean_mask(semantic, ((semantic < 0) | (semantic >= n)) & (semantic != ignore))
  check = tf.debugging.Assert(tf.size(bad) == 0, [_RANGE_MARK, bad[:1], tf.size(bad)])
  with tf.control_dependencies([check]):
    return tf.identity(semantic)


def _decode(example, descriptor: DatasetDescriptor):
  semantic = checked_labels(tf.cast(example["semantic"][..., 0], tf.int32), descriptor)
  out = {"image": example["image"], "semantic": semantic}
  if "name" in example:
    out["name"] = example["name"]
  if "instance" in example:
    out["instance"] = tf.cast(example["instance"][..., 0], tf.int32)
    out["panoptic"] = out["semantic"] * descriptor.label_divisor + out["instance"]
  return out


def process_split(split: str, process_index: int, process_count: int) -> str:
  return tfds.even_splits(split, n=process_count, drop_remainder=False)[process_index]


def train_dataset(
  source: Source,
  data_config,
  *,
  local_batch_size: int,
  seed: int,
  start_step: int = 0,
  process_index: int = 0,
  process_count: int = 1,
) -> tf.data.Dataset:
  """Endless process-local training batches, starting after ``start_step`` consumed batches.

  Element ``k`` of the stream is a pure function of ``(seed, k)`` (`segjax.data.stream`): a
  resumed run starts at ``start_step x batch`` without reading what came before, and sees
  exactly the batches an uninterrupted run would.

  ``data_config.process_data`` says how processes share the data: ``"split"`` (default) — each
  reads its own ``1/process_count`` of the split in its own order (reading scales with the
  cluster); ``"stream"`` — every process indexes the same stream of the whole split and takes
  its own ``local_batch_size`` elements of each global batch, so the global batches (and the
  training run) do not depend on the number of processes.
  """
  mode = data_config.get("process_data", "split")
  if mode not in ("split", "stream"):
    raise ValueError(f"data.process_data={mode!r} is not 'split' or 'stream'.")
  position, position_count = 0, 1
  if mode == "stream":  # one global stream: no process-dependent split or seed
    position, position_count = process_index, process_count
    process_index, process_count = 0, 1
  split = process_split(data_config.train_split, process_index, process_count)
  split_size(source.builder, split)  # an unknown split names the ones there are
  records = stream.records(source.builder, split)
  parse = parser(source)
  ignore = source.descriptor.ignore_label
  patch_size = config_size(data_config, "patch_size")
  balanced = data_config.get("class_balanced", 0.0) if patch_size else 0.0
  if patch_size:  # a grid of (overlapping) patches of every image, instead of whole images
    units = stream.patch_units(
      records,
      parse,
      source.descriptor.num_classes,
      size=patch_size,
      stride=config_size(data_config, "patch_stride") or patch_size,
      ignore_label=ignore,
      min_labelled_fraction=data_config.get("min_labelled_fraction", 0.0),
      with_classes=balanced > 0,
      iterate=lambda ds: as_numpy(ds, source),
    )
  else:
    units = stream.Units(np.arange(len(records), dtype=np.int64))
  ds = stream.indexed_stream(
    records,
    parse,
    units,
    seed=seed + process_index,
    start=start_step * local_batch_size,
    local_batch_size=local_batch_size,
    position=position,
    position_count=position_count,
    class_balanced=balanced,
    patch_size=patch_size,
    ignore_label=ignore,
  )
  preprocess = train_preprocess(source.descriptor, data_config, seed, process_index)
  ds = ds.map(stream.graph(preprocess), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  check_train_shape(ds.element_spec["image"].shape, data_config)
  ds = ds.batch(local_batch_size, drop_remainder=True)
  return ds.prefetch(data_config.get("prefetch", 2))


def parser(source: Source):
  """``serialized example -> decoded example`` (`decode`) of ``source``'s tfds features."""
  features = source.builder.info.features
  return lambda serialized: decode(source, features.deserialize_example(serialized))


def train_preprocess(descriptor, data_config, seed: int, process_index: int = 0):
  """``(index, example) -> training example``: intensities to [0, 1], ``data.train_pp`` seeded by
  ``(seed, process, index)``, standardisation, and only the arrays the train step takes."""
  augment = ops.build(data_config.get("train_pp", ""), op_context(descriptor, data_config))

  def preprocess(index, example):
    example_seed = tf.stack([tf.constant(seed, tf.int64) * 1000003 + process_index, index])
    example = augment(unit_image(example, data_config), example_seed)
    return training_example(standardize_image(example, data_config))

  return preprocess


def _decoded_signature(info: DataInfo, image_size=None) -> dict:
  """The `tf.TensorSpec` of a decoded example of a dataset described by ``info``."""
  size = list(image_size or info.image_size or (None, None))
  spec = {
    "image": tf.TensorSpec(size + [info.channels], info.dtype),
    "semantic": tf.TensorSpec(size, tf.int32),
  }
  if info.instances:
    spec.update(instance=tf.TensorSpec(size, tf.int32), panoptic=tf.TensorSpec(size, tf.int32))
  return spec


def abstract_train_batch(data_config, info: DataInfo, batch_size: int) -> dict:
  """Shapes and dtypes (`jax.ShapeDtypeStruct`) of a training batch of ``batch_size``, from the
  preprocessing ops traced on an empty dataset: no data is read."""
  import jax  # pylint: disable=import-outside-toplevel

  empty = tf.data.Dataset.from_generator(
    lambda: iter(()), output_signature=_decoded_signature(info)
  )
  ds = empty.enumerate().map(stream.graph(train_preprocess(info.descriptor, data_config, seed=0)))
  check_train_shape(ds.element_spec["image"].shape, data_config)
  return {
    k: jax.ShapeDtypeStruct((batch_size, *spec.shape), spec.dtype.as_numpy_dtype)
    for k, spec in ds.element_spec.items()
  }


def abstract_eval_batch(data_config, info: DataInfo, batch_size: int, image_size=None) -> dict:
  """Shapes and dtypes of an evaluation batch: ``data.eval_pp`` traced on an empty dataset of
  images of ``image_size`` (default: the dataset's own, when fixed)."""
  import jax  # pylint: disable=import-outside-toplevel

  empty = tf.data.Dataset.from_generator(
    lambda: iter(()), output_signature=_decoded_signature(info, image_size)
  )
  ds = empty.map(stream.graph(eval_preprocess(info.descriptor, data_config)))
  pad = config_size(data_config, "eval_pad_to") or _last_pad_to(data_config.get("eval_pp", ""))
  if None in tuple(ds.element_spec["image"].shape)[:2] and pad is None:
    raise ValueError(
      f"Evaluation images of {info.descriptor.name} have no fixed size after "
      f"config.data.eval_pp={data_config.get('eval_pp', '')!r}: set "
      "config.data.eval_pad_to, end eval_pp with pad_to, or give an evaluation "
      "image size."
    )
  # A final pad_to(S) makes every image S when the ops before it keep them within S (as
  # resize_keep_ratio(long=S) does); TensorFlow cannot infer that statically.
  fixed = lambda shape: tuple(pad[i] if d is None and i < 2 else d for i, d in enumerate(shape))
  return {
    k: jax.ShapeDtypeStruct((batch_size, *fixed(spec.shape)), spec.dtype.as_numpy_dtype)
    for k, spec in ds.element_spec.items()
  }


def _last_pad_to(spec: str) -> tuple[int, int] | None:
  """The size of the last ``pad_to`` of an op chain, if it ends with one."""
  last = [op.strip() for op in spec.split("|") if op.strip()][-1:] if spec else []
  if not last or not last[0].startswith("pad_to("):
    return None
  size = ast.literal_eval(last[0][len("pad_to(") : -1].split("=")[-1].strip())
  return (size, size) if isinstance(size, int) else tuple(size)


def training_example(example):
  """The arrays the train step gets: every numeric entry (names and patch positions dropped)."""
  return {
    k: v
    for k, v in example.items()
    if v.dtype != tf.string and k not in ("patch_position", "labelled")
  }


def config_size(data_config, key: str) -> tuple[int, int] | None:
  """``config.data.<key>`` as ``(height, width)`` (an int means a square); None when unset. A value
  of another shape is an error naming the key."""
  value = data_config.get(key)
  if value is None or value == () or value == 0:
    return None
  try:
    return ops.size_pair(value)
  except (ValueError, TypeError) as e:
    raise ValueError(
      f"config.data.{key}={value!r}: expected an int or (height, width) of positive ints."
    ) from e


def check_config(data_config) -> None:
  """Checks ``config.data`` before anything is built: sizes, and every op of ``train_pp`` and
  ``eval_pp`` registered with arguments it accepts."""
  for key in ("crop_size", "patch_size", "patch_stride", "eval_pad_to", "eval_size_multiple"):
    config_size(data_config, key)
  ops.check_normalization(data_config.get("normalization", "mean_std"))
  if data_config.get("eval_pad_mode") not in (None, *ops.PAD_MODES):
    raise ValueError(
      f"config.data.eval_pad_mode={data_config.eval_pad_mode!r}: use one of "
      f"{', '.join(map(repr, ops.PAD_MODES))}"
    )
  for key in ("train_pp", "eval_pp"):
    try:  # building needs a descriptor, not the dataset's own: any one checks names and arguments
      ops.build(data_config.get(key, ""), ops.Context(shapes.DESCRIPTOR))
    except (KeyError, TypeError, ValueError, SyntaxError) as e:
      reason = e.args[0] if isinstance(e, KeyError) and e.args else e  # KeyError quotes itself
      raise ValueError(f"config.data.{key}={data_config.get(key)!r}: {reason}") from e


def check_train_shape(shape, data_config):
  """The training images must have one static size, ``data.crop_size``, after ``data.train_pp``."""
  crop = tuple(data_config.crop_size)
  if tuple(shape[:2]) != crop:
    raise ValueError(
      f"config.data.train_pp={data_config.get('train_pp', '')!r} gives training "
      f"images of size {tuple(shape[:2])} but config.data.crop_size is {crop}: end "
      f"the chain with random_crop({crop[0]}) (or resize) at that size, or change "
      "crop_size."
    )


def op_context(descriptor: DatasetDescriptor, data_config) -> ops.Context:
  """What preprocessing ops read besides the example: the descriptor; padding with the mean."""
  return ops.Context(descriptor=descriptor, image_fill=tuple(data_config.mean))


def eval_dataset(
  source: Source,
  data_config,
  split: str,
  *,
  local_batch_size: int,
  process_index: int = 0,
  process_count: int = 1,
) -> tuple[tf.data.Dataset, int]:
  """Process-local evaluation batches of ``split``; returns (dataset, batches).

  Every image is evaluated at its own size (after ``data.eval_pp`` and the padding of
  ``data.eval_pad_to`` / ``data.eval_size_multiple``, both of which depend on the image alone):
  the images are grouped by size, sizes in the order they first appear in the split, and each
  group is cut into batches whose last one is completed with blank examples of that size
  (``valid = False``). Each process keeps its own consecutive share of the split and yields, for
  every size, ``max over processes of ceil(its count / local batch)`` batches, so all processes
  run the same shapes in the same order, and neither the batch size nor the number of processes
  changes what the model sees or what the metrics count. Each example also carries ``size``, the
  image's ``(height, width)`` before that padding, to which pictures and host metrics crop.
  """
  if local_batch_size < 1:
    raise ValueError(f"The evaluation batch size must be positive, not {local_batch_size}.")
  split_size(source.builder, split)  # an unknown split names the ones there are
  shares = [
    image_sizes(source, data_config, process_split(split, i, process_count))
    for i in range(process_count)
  ]
  if not sum(len(s) for s in shares):
    raise ValueError(f"Split {split!r} of {source.builder.name!r} has no examples to evaluate.")
  slots, sizes, groups = eval_slots(shares, process_index, local_batch_size)
  if groups > MANY_SIZES:
    from segjax import run_log  # pylint: disable=import-outside-toplevel

    run_log.info(
      "%s: %d image sizes, each evaluated at its own size (one compiled step per size); "
      "--config.data.eval_size_multiple=32 pads each image up to a multiple of 32 (padding "
      "ignored by the metrics), so fewer sizes compile",
      split,
      groups,
    )
  first = sum(len(s) for s in shares[:process_index])  # record number of this share's first
  numbers = np.where(slots >= 0, slots + first, 0)  # blanks read record 0 and blank it
  records = stream.records(source.builder, split)
  parse, prepare = parser(source), eval_preprocess(source.descriptor, data_config)
  ignore = source.descriptor.ignore_label

  def example(slot, size, serialized):
    real = prepare(parse(serialized))
    return tf.cond(slot >= 0, lambda: real, lambda: _blank_like(_fit(real, size), ignore))

  ds = tf.data.Dataset.from_tensor_slices((slots, sizes, numbers))
  ds = stream.read(records, ds).map(
    stream.graph(example), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
  )
  ds = ds.batch(local_batch_size, drop_remainder=True)
  return ds.prefetch(2), len(slots) // local_batch_size


# More image sizes than this in a split: a notice names data.eval_size_multiple.
MANY_SIZES = 16

_SIZES_CACHE: dict = {}


def image_sizes(source: Source, data_config, split: str) -> np.ndarray:
  """``[examples, 2]``: the ``(height, width)`` of each example of ``split`` in evaluation
  batches (`eval_preprocess`), in split order. Known without reading when the preprocessing
  gives one static size; otherwise from one pass over the split, kept for the life of the
  process (keyed by the record files and their modification times)."""
  prepare = eval_preprocess(source.descriptor, data_config)
  parse = parser(source)
  records = stream.records(source.builder, split)
  prepared = lambda serialized: prepare(parse(serialized))
  traced = tf.data.Dataset.from_tensor_slices(tf.constant([], tf.string)).map(
    stream.graph(prepared)
  )
  static = tuple(traced.element_spec["image"].shape)[:2]
  if None not in static:
    return np.tile(np.array(static, np.int32), (len(records), 1))
  key = (
    split,
    tuple((path, tf.io.gfile.stat(path).mtime_nsec) for path in records.paths),
    tuple(str(data_config.get(k)) for k in ("eval_pp", "eval_pad_to", "eval_size_multiple")),
  )
  if key not in _SIZES_CACHE:
    ds = stream.read(records, tf.data.Dataset.range(len(records)))
    ds = ds.map(
      stream.graph(lambda serialized: tf.shape(prepared(serialized)["image"])[:2]),
      num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True,
    )
    _SIZES_CACHE[key] = np.array(list(as_numpy(ds, source)), np.int32).reshape(-1, 2)
  return _SIZES_CACHE[key]


def eval_slots(shares: list[np.ndarray], process_index: int, local_batch_size: int):
  """``(slots, sizes, groups)`` of process ``process_index``: ``slots[j]`` is the number in its
  share of the example at position ``j`` of its evaluation stream (-1: a blank), ``sizes[j]`` its
  ``(height, width)``; ``shares[p]`` are the sizes of process ``p``'s examples (`image_sizes`).
  Sizes come in the order of their first appearance in the split; each fills
  ``max over processes of ceil(count / local_batch_size)`` batches on every process."""
  everything = np.concatenate(shares)
  _, first = np.unique(everything, axis=0, return_index=True)
  order = [tuple(everything[i]) for i in sorted(first)]
  slots, sizes = [], []
  for size in order:
    members = [np.flatnonzero((s == size).all(axis=1)) for s in shares]
    length = max(math.ceil(len(m) / local_batch_size) for m in members) * local_batch_size
    mine = members[process_index]
    slots.append(np.concatenate([mine, np.full(length - len(mine), -1)]))
    sizes.append(np.tile(np.array(size, np.int32), (length, 1)))
  return (
    np.concatenate(slots).astype(np.int64),
    np.concatenate(sizes).astype(np.int32),
    len(order),
  )


def _fit(example, size):
  """``example`` with every per-pixel map padded or cut to ``size`` (a blank's template)."""
  padded = ops.pad_example(example, size, ignore_label=0)
  return {
    k: v[: size[0], : size[1]] if k in ops.spatial_keys(padded) else v for k, v in padded.items()
  }


def unit_image(example, data_config):
  """The example with its image as float32 in [0, 1] and ``data.channels`` channels
  (`segjax.data.intensity.unit_image`, in TensorFlow ops)."""
  return {**example, "image": intensity.unit_image(example["image"], data_config, ops.TF_NUMPY)}


def standardize_image(example, data_config):
  """``(image - data.mean) / data.std``: the last step before the model."""
  return {**example, "image": ops.standardize(example["image"], data_config.mean, data_config.std)}


def split_size(builder, split: str) -> int:
  """The number of examples of ``split`` (a tfds split string, e.g. ``"validation[0%:50%]"``);
  an unknown split raises naming the ones the dataset has."""
  known = builder.info.splits
  base = split.split("[")[0] if isinstance(split, str) else split.split  # str or tfds _EvenSplit
  if known and base not in known:
    raise KeyError(
      f"Dataset {builder.name!r} has no split {base!r}; it has {sorted(known.keys())}."
    )
  count = int(builder.as_dataset(split=split, shuffle_files=False).cardinality())
  if count < 0:  # unknown cardinality: count once
    count = sum(1 for _ in builder.as_dataset(split=split, shuffle_files=False))
  return count


def eval_preprocess(descriptor, data_config):
  """``example -> evaluation example``: unit intensities, ``data.eval_pp``, the image's ``size``
  recorded, the padding of ``data.eval_pad_to`` (up to at least that size) and
  ``data.eval_size_multiple`` (up to the next multiple) with ignored labels and the image
  mirrored (``data.eval_pad_mode="reflect"``, the default) or the mean (``"constant"``),
  standardisation, ``valid = True``."""
  context = op_context(descriptor, data_config)
  process = ops.build(data_config.get("eval_pp", ""), context)
  mode = data_config.get("eval_pad_mode") or "reflect"
  padding = [
    f"{op}({config_size(data_config, key)}, mode={mode!r})"
    for key, op in (("eval_pad_to", "pad_to"), ("eval_size_multiple", "pad_to_multiple"))
    if config_size(data_config, key)
  ]
  pad = ops.build("|".join(padding), context)

  def prepare(example):
    seed = tf.constant([0, 0], tf.int64)
    example = process(unit_image(example, data_config), seed)
    size = tf.shape(example["image"])[:2]
    example = standardize_image(pad(example, seed), data_config)
    example.pop("name", None)
    return {**example, "valid": tf.constant(True), "size": size}

  return prepare


def prepare_image(example, data_config):
  """`unit_image` then `standardize_image`: an example as the model sees it (in TensorFlow ops;
  `segjax.data.intensity.prepare_image` is the same in numpy, for prediction)."""
  return standardize_image(unit_image(example, data_config), data_config)


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


def as_numpy(ds: tf.data.Dataset, source: Source | None = None) -> Iterator[dict[str, np.ndarray]]:
  """The batches of ``ds`` as numpy; a label out of range (:func:`checked_labels`) stops with
  :class:`LabelOutOfRange` naming the value and ``source``'s dataset."""
  iterator = iter(tfds.as_numpy(ds))
  while True:
    try:
      batch = next(iterator)
    except StopIteration:
      return
    except tf.errors.InvalidArgumentError as error:
      if _RANGE_MARK not in error.message:
        raise
      raise _label_error(error.message, source) from None
    yield batch


def _label_error(message: str, source: Source | None) -> LabelOutOfRange:
  values = re.findall(r"\[(-?\d+)\]", message.split(_RANGE_MARK, 1)[1])
  value, count = (values + ["?", "?"])[:2]
  where = "the dataset"
  if source is not None:
    d = source.descriptor
    where = (
      f"dataset {source.builder.name!r} ({source.builder.data_dir}), which has "
      f"{d.num_classes} classes (0..{d.num_classes - 1}) and ignore label {d.ignore_label}"
    )
  return LabelOutOfRange(
    f"Label {value} in a mask of {where} ({count} pixels of that example out of range): the "
    "masks and the dataset's classes disagree. Fix the masks, or the class list (classes.json "
    "of a folder dataset, the catalogue entry of a tfds dataset)."
  )
