"""The training stream by index: its element ``k`` is a pure function of ``(seed, k)``.

Element ``k`` of the endless stream is the unit (an example, or one grid patch of one) at
position ``k mod M`` of epoch ``k div M``'s permutation of the ``M`` units
(``tf.random.experimental.index_shuffle``: a bijection computed from the index, nothing
materialised), or, with class-balanced sampling and probability ``fraction`` drawn from
``(seed, k)``, a unit containing a class drawn from ``(seed, k)``. The unit's stored example is
read by its record number — an index of the record offsets in the tfds dataset's TFRecord files
(`ensure_index`), read with TensorFlow ops alone (`read`) — then parsed, decoded, cut to its patch
and augmented with the seed ``(seed, k)``. Resuming at step ``s`` starts the index range at
``s x batch``: nothing before it is read or decoded.

With patches, the table of units (each patch's record and position; its classes and labelled
fraction for class-balanced sampling and ``min_labelled_fraction``) comes from one pass over the
split's masks when the stream starts — the same pass at step 0 and at any later step.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from segjax.data import ops
from segjax.data import patches as patches_lib


@dataclasses.dataclass(frozen=True)
class Units:
  """The units of the stream: ``records[u]`` is unit ``u``'s record number, ``positions[u]`` its
  patch's top-left ``(y, x)`` (None: whole examples); ``classes[c]`` the units containing class
  ``c`` (class-balanced sampling only)."""

  records: np.ndarray
  positions: np.ndarray | None = None
  classes: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)

  def __len__(self):
    return len(self.records)


@dataclasses.dataclass(frozen=True)
class Records:
  """Stored examples by record number: record ``i`` is the payload of bytes ``[offset[i],
  offset[i] + length[i])`` of the TFRecord file ``paths[file[i]]`` (of ``sizes[file[i]]``
  bytes)."""

  paths: tuple[str, ...]
  sizes: np.ndarray
  file: np.ndarray
  offset: np.ndarray
  length: np.ndarray

  def __len__(self):
    return len(self.file)

  @classmethod
  def of_files(cls, paths: Sequence[str], index: dict | None = None) -> "Records":
    """Every record of the TFRecord files ``paths``, in order (``index``: `index_file` of each
    path, when known)."""
    index = index or {}
    entries = [index.get(os.path.basename(p)) or index_file(p) for p in paths]
    return cls(
      tuple(paths),
      np.array([e[2] for e in entries], np.int64),
      np.concatenate(
        [np.full(len(e[0]), i, np.int64) for i, e in enumerate(entries)]
        or [np.zeros([0], np.int64)]
      ),
      np.concatenate([e[0] for e in entries] or [np.zeros([0], np.int64)]),
      np.concatenate([e[1] for e in entries] or [np.zeros([0], np.int64)]),
    )

  def take(self, rows: np.ndarray) -> "Records":
    return dataclasses.replace(
      self, file=self.file[rows], offset=self.offset[rows], length=self.length[rows]
    )


def graph(fn: Callable) -> Callable:
  """``fn`` traced as it is written (no autograph): segjax's tf.data functions use ``tf.cond``,
  ``tf.where`` and Python control flow on static values only, and autograph's conversion writes a
  ``__autograph_generated_file*.py`` per function into the temporary directory, which a process
  stopped by a signal never removes."""
  return tf.autograph.experimental.do_not_convert(fn)


def index_file(path: str) -> tuple[np.ndarray, np.ndarray, int]:
  """``(payload offsets, payload lengths, file size)`` of a TFRecord file, from its record
  headers alone (each record: 8-byte length, 4-byte CRC, payload, 4-byte CRC)."""
  offsets, lengths = [], []
  with tf.io.gfile.GFile(path, "rb") as f:
    size = f.size()
    position = 0
    while position < size:
      f.seek(position)
      header = f.read(12)
      if len(header) < 12:
        raise ValueError(f"{path}: truncated TFRecord header at byte {position}")
      (length,) = struct.unpack("<Q", header[:8])
      offsets.append(position + 12)
      lengths.append(length)
      position += 12 + length + 4
  return np.array(offsets, np.int64), np.array(lengths, np.int64), size


INDEX_NAME = "segjax_record_index.npz"


def ensure_index(builder):
  """``builder``, with the record index of its TFRecord files written once beside them
  (``segjax_record_index.npz``: every record's offset and length, from the headers; nothing is
  decoded): the training stream reads examples by record number."""
  path = os.path.join(os.fspath(builder.data_dir), INDEX_NAME)
  if tf.io.gfile.exists(path):
    return builder
  from segjax import run_log  # pylint: disable=import-outside-toplevel

  arrays = {}
  for split in builder.info.splits.values():
    for file_path in split.filepaths:
      offsets, lengths, size = index_file(os.fspath(file_path))
      name = os.path.basename(os.fspath(file_path))
      arrays.update(
        {
          f"{name}/offset": offsets,
          f"{name}/length": lengths,
          f"{name}/size": np.array(size, np.int64),
        }
      )
  try:
    with tf.io.gfile.GFile(path + ".incomplete", "wb") as f:
      np.savez(f, **arrays)
    tf.io.gfile.rename(path + ".incomplete", path, overwrite=True)
    run_log.info("Indexed the records of %s (%s)", builder.name, path)
  except (OSError, tf.errors.OpError):  # a read-only dataset: the index is made at each start
    pass
  return builder


def _stored_index(builder) -> dict:
  path = os.path.join(os.fspath(builder.data_dir), INDEX_NAME)
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path, "rb") as f:
    arrays = dict(np.load(f))
  names = {key.split("/")[0] for key in arrays}
  return {
    n: (arrays[f"{n}/offset"], arrays[f"{n}/length"], int(arrays[f"{n}/size"])) for n in names
  }


def records(builder, split) -> Records:
  """The records of ``split`` (any tfds split, e.g. ``"train[0%:50%]"``) by number, from the
  builder's record index (`ensure_index`)."""
  instructions = builder.info.splits[split].file_instructions
  paths = list(dict.fromkeys(os.fspath(i.filename) for i in instructions))
  every = Records.of_files(paths, _stored_index(builder))
  first = np.cumsum([0] + [int(np.sum(every.file == k)) for k in range(len(paths))])
  rows = np.concatenate(
    [
      np.arange(i.skip, i.skip + i.take) + first[paths.index(os.fspath(i.filename))]
      for i in instructions
    ]
    or [np.zeros([0], np.int64)]
  )
  return every.take(rows.astype(np.int64))


def read(records: Records, ds: tf.data.Dataset) -> tf.data.Dataset:
  """``(..., record number)`` elements -> ``(..., serialized example)``, in order, read by TF ops
  alone (a one-record `tf.data.FixedLengthRecordDataset` at the record's offset; no Python runs
  in the pipeline)."""
  paths = tf.constant(list(records.paths))
  sizes, file = tf.constant(records.sizes), tf.constant(records.file)
  offset, length = tf.constant(records.offset), tf.constant(records.length)

  def one(*element):
    number = element[-1]
    which = file[number]
    start, size = offset[number], length[number]
    payload = tf.data.FixedLengthRecordDataset(
      paths[which], record_bytes=size, header_bytes=start, footer_bytes=sizes[which] - start - size
    )
    return payload.take(1).map(graph(lambda serialized: (*element[:-1], serialized)))

  return ds.interleave(
    graph(one),
    cycle_length=16,
    block_length=1,
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=True,
  )


def global_position(local, local_batch_size: int, position: int, position_count: int):
  """The index in the one global stream of this process's ``local``-th element, when every process
  keeps its ``local_batch_size`` consecutive elements of each global batch (``process_data =
  "stream"``)."""
  if position_count == 1:
    return local
  batch, offset = local // local_batch_size, local % local_batch_size
  return batch * (local_batch_size * position_count) + position * local_batch_size + offset


def unit_of(k, units: Units, seed: int, class_balanced: float = 0.0):
  """Unit number of stream element ``k`` (int64 tensor): epoch ``k div M``'s permutation at
  ``k mod M``, or with probability ``class_balanced`` a unit drawn uniformly among those of a
  class drawn uniformly (among the classes present)."""
  m = len(units)
  epoch, place = k // m, k % m
  permuted = tf.random.experimental.index_shuffle(
    place, tf.stack([tf.constant(seed, tf.int64), epoch]), m - 1
  )
  if not class_balanced or not units.classes:
    return permuted
  draws = tf.random.stateless_uniform(
    [3], tf.stack([tf.constant(seed, tf.int64) * 7919 + 1, k]), dtype=tf.float64
  )
  class_list = sorted(units.classes)
  offsets = np.cumsum([0] + [len(units.classes[c]) for c in class_list])
  flat = tf.constant(np.concatenate([units.classes[c] for c in class_list]).astype(np.int64))
  counts = tf.constant(np.diff(offsets), tf.float64)
  which = tf.minimum(tf.cast(draws[1] * len(class_list), tf.int32), len(class_list) - 1)
  member = tf.minimum(
    tf.cast(draws[2] * counts[which], tf.int64), tf.cast(counts[which], tf.int64) - 1
  )
  balanced = tf.gather(flat, tf.constant(offsets[:-1], tf.int64)[which] + member)
  return tf.where(draws[0] < class_balanced, balanced, permuted)


def pad_to_patch(example: dict, size: Sequence[int], ignore_label: int) -> dict:
  """An (unbatched) example padded at the bottom/right to at least one patch."""
  return ops.pad_example(example, size, ignore_label=ignore_label)


def tf_grid(height, width, size: Sequence[int], stride: Sequence[int]) -> tf.Tensor:
  """`segjax.data.patches.grid_positions` of an image of tensor height/width, as int32 ``[N, 2]`` (y, x)."""
  grid = tf.numpy_function(
    lambda h, w: np.array(
      patches_lib.grid_positions(int(h), int(w), size, stride), np.int32
    ).reshape(-1, 2),
    [height, width],
    tf.int32,
    stateful=False,
  )
  return tf.ensure_shape(grid, [None, 2])


def cut_patch(example: dict, position, size: Sequence[int]) -> dict:
  """The patch of ``size`` at ``position`` (y, x) of every per-pixel map of a padded example;
  other keys are copied; ``patch_position`` is added."""
  out = dict(example)
  for key in ops.spatial_keys(example):
    value = example[key]
    out[key] = tf.ensure_shape(
      value[position[0] : position[0] + size[0], position[1] : position[1] + size[1]],
      [size[0], size[1]] + value.shape[2:],
    )
  out["patch_position"] = position
  return out


def example_at(units: Units, patch_size, ignore_label: int):
  """``(unit, decoded example) -> the unit's example``: its patch when units are patches."""
  if units.positions is None:
    return lambda unit, example: example
  positions = tf.constant(units.positions, tf.int32)

  def cut(unit, example):
    example = pad_to_patch(example, patch_size, ignore_label)
    return cut_patch(example, tf.gather(positions, unit), patch_size)

  return cut


def patch_units(
  source_records: Records,
  parse: Callable,
  num_classes: int,
  *,
  size,
  stride,
  ignore_label: int,
  min_labelled_fraction: float = 0.0,
  with_classes: bool = False,
  iterate: Callable = tfds.as_numpy,
) -> Units:
  """The grid patches of every example (`segjax.data.patches.grid_positions`), without those whose
  labelled fraction is under ``min_labelled_fraction``, and for class-balanced sampling the units
  containing each class: one pass over the split (``iterate``: dataset -> numpy elements)."""
  count = len(source_records)

  def survey(example):
    example = pad_to_patch(example, size, ignore_label)
    shape = tf.shape(example["semantic"])
    grid = tf_grid(shape[0], shape[1], size, stride)

    def describe(position):
      semantic = cut_patch({"semantic": example["semantic"]}, position, size)["semantic"]
      labels = tf.reshape(semantic, [-1])
      fraction = tf.reduce_mean(tf.cast(labels != ignore_label, tf.float32))
      labels = tf.boolean_mask(labels, (labels >= 0) & (labels < num_classes))
      present = tf.math.bincount(labels, minlength=num_classes, maxlength=num_classes) > 0
      return fraction, present

    fractions, present = tf.map_fn(
      describe, grid, fn_output_signature=(tf.float32, tf.TensorSpec([num_classes], tf.bool))
    )
    return grid, fractions, present

  ds = read(source_records, tf.data.Dataset.range(count).map(graph(lambda i: (i, i))))
  ds = ds.map(
    graph(lambda i, serialized: (i, survey(parse(serialized)))),
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=True,
  )
  rows, positions, present = [], [], []
  for record, (grid, fractions, classes) in iterate(ds):
    keep = fractions >= min_labelled_fraction
    rows.append(np.full(int(keep.sum()), record, np.int64))
    positions.append(grid[keep])
    present.append(classes[keep])
  rows = np.concatenate(rows) if rows else np.zeros([0], np.int64)
  if not len(rows):
    raise ValueError(
      f"No training patch has a labelled fraction of at least "
      f"config.data.min_labelled_fraction={min_labelled_fraction}."
    )
  present = np.concatenate(present)
  classes = (
    {c: np.flatnonzero(present[:, c]) for c in range(num_classes) if present[:, c].any()}
    if with_classes
    else {}
  )
  return Units(rows, np.concatenate(positions).astype(np.int32), classes)


def indexed_stream(
  source_records: Records,
  parse: Callable,
  units: Units,
  *,
  seed: int,
  start: int,
  local_batch_size: int,
  position: int = 0,
  position_count: int = 1,
  class_balanced: float = 0.0,
  patch_size=None,
  ignore_label: int = 255,
):
  """Endless ``(k, example)`` for this process from local element ``start`` on: ``k`` is the
  element's index in the stream (the global one with ``position_count > 1``), ``example`` the
  decoded (and cut) example of unit `unit_of` (k)."""
  if not len(units):
    raise ValueError("The training split has no examples.")
  cut = example_at(units, patch_size, ignore_label)
  record_of = tf.constant(units.records, tf.int64)
  ds = tf.data.Dataset.range(start, np.iinfo(np.int64).max)
  ds = ds.map(
    graph(lambda local: global_position(local, local_batch_size, position, position_count))
  )
  ds = ds.map(graph(lambda k: (k, unit_of(k, units, seed, class_balanced))))
  ds = read(source_records, ds.map(graph(lambda k, unit: (k, unit, record_of[unit]))))
  return ds.map(
    graph(lambda k, unit, serialized: (k, cut(unit, parse(serialized)))),
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=True,
  )
