"""The input part of a plan: how fast this machine's CPU decodes and preprocesses a recipe's
training examples (`input_rate`), and what that asks of a slice's hosts (`input_plan`)."""

from __future__ import annotations

import os
import time

from segjax.data import pipeline
from segjax.data import stream


def _mock_files(directory: str, info, size, count: int = 4) -> list[tuple[str, ...]]:
  """``count`` scenes of ``size`` written as the dataset stores them: the image as PNG or JPEG
  (16-bit PNG for 16-bit datasets; one channel for grey ones), labels (and instances) as PNG."""
  import cv2  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from segjax.data import shapes  # pylint: disable=import-outside-toplevel

  rows = []
  for i in range(count):
    image, semantic, instance = shapes.render_scene(
      np.random.default_rng(i), max(size), max_things=24
    )
    image, semantic, instance = (a[: size[0], : size[1]] for a in (image, semantic, instance))
    if info.channels == 1:
      image = image.mean(axis=-1).astype(np.uint8)
    if info.dtype == "uint16" or getattr(info.dtype, "name", "") == "uint16":
      image = image.astype(np.uint16) * 257
    suffix = ".jpg" if info.image_format == "jpeg" and image.dtype == np.uint8 else ".png"
    paths = (
      os.path.join(directory, f"{i}{suffix}"),
      os.path.join(directory, f"{i}_labels.png"),
      os.path.join(directory, f"{i}_instances.png"),
    )
    cv2.imwrite(paths[0], image)
    cv2.imwrite(paths[1], semantic)
    cv2.imwrite(paths[2], instance)
    rows.append(paths)
  return rows


def input_rate(data_config, info, size, *, examples: int = 12) -> dict:
  """Training examples per second on one CPU core of this machine: files of ``size`` (written
  here, `_mock_files`) read and decoded, then the recipe's ``data.train_pp`` and normalisation
  (`segjax.data.pipeline.train_preprocess`), in a tf.data pipeline limited to one thread."""
  import tempfile  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  with tempfile.TemporaryDirectory(prefix="segjax-plan-input-") as directory:
    paths = _mock_files(directory, info, size)
    channels, dtype = info.channels, info.dtype

    def read(image_path, label_path, instance_path):
      image = tf.io.decode_image(
        tf.io.read_file(image_path), channels=channels, dtype=dtype, expand_animations=False
      )
      semantic = tf.cast(tf.io.decode_png(tf.io.read_file(label_path))[..., 0], tf.int32)
      example = {"image": image, "semantic": semantic}
      if info.instances:
        example["instance"] = tf.cast(
          tf.io.decode_png(tf.io.read_file(instance_path), dtype=tf.uint16)[..., 0], tf.int32
        )
        example["panoptic"] = semantic * info.descriptor.label_divisor + example["instance"]
      return example

    ds = tf.data.Dataset.from_tensor_slices(tuple(map(list, zip(*paths)))).repeat()
    ds = (
      ds.map(stream.graph(read))
      .enumerate()
      .map(stream.graph(pipeline.train_preprocess(info.descriptor, data_config, seed=0)))
    )
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    options.autotune.enabled = False
    iterator = iter(ds.with_options(options))
    for _ in range(2):  # warm-up
      next(iterator)
    start = time.perf_counter()
    for _ in range(examples):
      next(iterator)
    rate = examples / (time.perf_counter() - start)
  import platform  # pylint: disable=import-outside-toplevel

  return {
    "image_size": list(size),
    "format": info.image_format,
    "examples_per_s_per_core": rate,
    "cpu": _cpu_name() or platform.machine(),
  }


def _cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return ""


def input_plan(rate: dict, target_, batch_size: int, compute_seconds: float | None) -> dict:
  """What the hosts' CPUs of ``target_`` (`segjax.plan.Target`) must do per step: each host decodes ``batch_size / hosts`` examples
  with all its vCPUs at ``rate``'s examples/s per core; the cores a host needs to keep pace with
  the devices' own (compute/HBM/ICI) step time."""
  per_host = batch_size / target_.hosts
  chips_per_host = len(target_.devices) / target_.devices_per_chip / target_.hosts
  vcpus = target_.chip.host_vcpus * chips_per_host
  per_core = rate["examples_per_s_per_core"]
  out = dict(
    rate, examples_per_host=per_host, host_vcpus=vcpus, seconds=per_host / (vcpus * per_core)
  )
  if compute_seconds:
    out["cores_needed_per_host"] = per_host / compute_seconds / per_core
  return out
