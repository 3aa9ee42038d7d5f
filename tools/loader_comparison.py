r"""Examples/s of segjax's indexed tf.data training stream against Grain over the same records, read
by number (docs/data.md): a folder dataset of scenes (written here), batch 8, one epoch's worth of
random-access reads, decoding, ``flip_lr`` and normalisation.

  pip install grain   # not a segjax dependency
  python tools/loader_comparison.py --images=2000 --side=256

Rows: the tf.data stream (`segjax.data.pipeline.train_dataset`); Grain's ``MapDataset`` (index
shuffle, the records decoded by tfds's NumPy decoder, the flip and normalisation in NumPy) with
Grain's threads and with 2 worker processes; Grain with segjax's TensorFlow ops run per example
(what reusing `segjax.data.ops` from Grain would cost).
"""

import os
import shutil
import tempfile
import time

from absl import app
from absl import flags

_IMAGES = flags.DEFINE_integer("images", 2000, "Scenes in the folder dataset.")
_SIDE = flags.DEFINE_integer("side", 256, "Side of each scene.")
_BATCHES = flags.DEFINE_integer("batches", 60, "Timed batches of 8 per loader.")


def _rate(batches, count: int, batch: int = 8) -> float:
  iterator = iter(batches)
  for _ in range(3):  # warm-up
    next(iterator)
  start = time.perf_counter()
  for _ in range(count):
    next(iterator)
  return count * batch / (time.perf_counter() - start)


def main(argv):
  del argv
  # pylint: disable=import-outside-toplevel
  import grain
  import numpy as np
  import tensorflow as tf
  from segjax import config_defaults
  from segjax.data import pipeline, shapes, stream

  root = tempfile.mkdtemp(prefix="segjax-loaders-")
  shapes.write_folder(root, _SIDE.value, {"train": _IMAGES.value, "val": 2}, max_things=12)
  data = config_defaults.load_config(
    os.path.join(os.path.dirname(__file__), "..", "configs", "unet_folder.py")
  ).data
  data.update(
    dict(
      root=root,
      data_dir=os.path.join(root, ".prepared"),
      patch_size=None,
      crop_size=(_SIDE.value, _SIDE.value),
      train_pp=f"flip_lr|random_crop({_SIDE.value})",
    )
  )  # the crop: a static size
  source = pipeline.get_source(data)
  rows = {
    "tf.data, indexed (segjax)": _rate(
      pipeline.as_numpy(pipeline.train_dataset(source, data, local_batch_size=8, seed=0)),
      _BATCHES.value,
    )
  }

  index = stream.records(source.builder, "train")

  class Records:  # random access for Grain: each record's bytes at its offset
    def __len__(self):
      return len(index)

    def __getitem__(self, i):
      with open(index.paths[index.file[i]], "rb") as f:
        f.seek(int(index.offset[i]))
        return f.read(int(index.length[i]))

  records = Records()
  features = source.builder.info.features
  mean, std = np.array(data.mean, np.float32), np.array(data.std, np.float32)

  def decode(serialized):
    example = features.deserialize_example_np(serialized)
    return {"image": example["image"], "semantic": example["semantic"][..., 0].astype(np.int32)}

  def augment(example, rng):
    if rng.random() < 0.5:
      example = {k: v[:, ::-1] for k, v in example.items()}
    return {
      "image": (example["image"].astype(np.float32) / 255 - mean) / std,
      "semantic": np.ascontiguousarray(example["semantic"]),
    }

  base = grain.MapDataset.source(records).seed(0).shuffle().map(decode).random_map(augment)
  rows["Grain, NumPy ops, threads"] = _rate(
    base.batch(8).to_iter_dataset(grain.ReadOptions(num_threads=4)), _BATCHES.value
  )
  rows["Grain, NumPy ops, 2 worker processes"] = _rate(
    base.batch(8).to_iter_dataset().mp_prefetch(grain.MultiprocessingOptions(num_workers=2)),
    _BATCHES.value,
  )
  preprocess = pipeline.train_preprocess(source.descriptor, data, seed=0)

  def tf_ops(index, example):
    out = preprocess(tf.constant(index, tf.int64), {k: tf.constant(v) for k, v in example.items()})
    return {k: v.numpy() for k, v in out.items()}

  decoded = grain.MapDataset.source(records).seed(0).shuffle().map(decode)
  eager = grain.MapDataset.range(len(records)).map(lambda i: tf_ops(i, decoded[i]))
  rows["Grain, segjax's TF ops per example"] = _rate(
    eager.batch(8).to_iter_dataset(grain.ReadOptions(num_threads=4)), max(10, _BATCHES.value // 4)
  )
  shutil.rmtree(root, ignore_errors=True)
  print("| loader | examples/s |\n|---|---:|")
  for name, rate in rows.items():
    print(f"| {name} | {rate:.0f} |")


if __name__ == "__main__":
  app.run(main)
