"""Prediction with a trained model: pictures of a split, and pre-labels of image files.

A `Predictor` wraps a trained model (`segjax.runs.Run`: from a run directory or an exported file)
with its ``config.postprocess`` chain and the inference spec of the evaluation
(``config.inference``: sliding window, scales, flips, the model's own scales; `segjax.inference`),
compiled as one function. Models with more heads than ``logits`` (Panoptic-DeepLab) predict whole
images in one pass.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from segjax import inference
from segjax import postprocess
from segjax.data import intensity
from segjax.data import readers


def local_data_parallel(fn, devices):
  """``fn`` compiled with its batch split over ``devices`` (this process's: in a multi-process
  run each host predicts its own images on its own devices); batches are padded to a multiple of
  the device count and the padding cut from the outputs. Called inside another ``jax.jit`` (the
  sliding window's), it constrains the batch to the same split when the count divides it."""
  sharding = jax.sharding.NamedSharding(
    jax.sharding.Mesh(np.asarray(devices), ("batch",)), jax.sharding.PartitionSpec("batch")
  )
  compiled = jax.jit(fn, in_shardings=sharding)

  def call(images):
    if isinstance(images, jax.core.Tracer):
      if images.shape[0] % len(devices) == 0:
        images = jax.lax.with_sharding_constraint(images, sharding)
      return fn(images)
    images = np.asarray(images, np.float32)
    count, pad = len(images), -len(images) % len(devices)
    if pad:
      images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
    return jax.tree.map(lambda a: a[:count], compiled(jax.device_put(images, sharding)))

  return call


class Predictor:
  """``run``'s model, post-processors and inference spec (``config.inference``, the protocol of
  the evaluation: `segjax.inference.Spec`), compiled over this process's devices."""

  def __init__(self, run, config=None):
    from segjax import runs  # pylint: disable=import-outside-toplevel

    self.run = run
    self.config = runs.with_run_model(run, config)
    self.descriptor = run.descriptor
    self.chain = postprocess.Chain(self.config.get("postprocess", "argmax"), self.descriptor)
    self.settings = self.config.get("predict", {})
    self.spec = inference.Spec.from_config(self.config)
    self.spec.check_chain(self.chain)
    model, variables, spec = run.model, run.variables, self.spec
    self.devices = jax.local_devices()
    mesh = jax.sharding.Mesh(np.asarray(self.devices), ("batch",))
    self._rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    self._replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    apply = lambda x, **kwargs: model.apply(variables, x, train=False, **kwargs)
    # the logits of windows (rasters streamed by segjax.geo), split over the devices
    self.logits_fn = local_data_parallel(
      lambda x: apply(x, **spec.model_kwargs())["logits"], self.devices
    )
    self._compiled = jax.jit(
      lambda x: self.chain.apply_compiled(spec.outputs(apply, x, self._rows))
    )

  def predict_batch(self, images: np.ndarray) -> dict:
    """Predictions (numpy, every post-processing step applied) of a batch of normalised images
    under the inference spec: whole images split over the devices (the batch padded to a
    multiple of their count), or with a sliding window each forward pass's windows."""
    images = np.asarray(images, np.float32)
    count = len(images)
    if self.spec.window is None:
      pad = -count % len(self.devices)
      if pad:
        images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
      x = jax.device_put(images, self._rows)
    else:
      x = jax.device_put(images, self._replicated)
    predictions = jax.device_get(jax.tree.map(lambda a: a[:count], self._compiled(x)))
    return self.chain.apply_host(predictions)

  def batches_whole_images(self) -> bool:
    """Whether images of one size share a batch (no sliding window: its windows share the
    forward passes instead)."""
    return self.spec.window is None

  def predict_image(self, image: np.ndarray) -> tuple[dict, np.ndarray]:
    """``(predictions of one normalised image [H,W,C] (batch of 1), class probabilities)``."""
    predictions = self.predict_batch(image[None])
    return predictions, np.asarray(jax.nn.softmax(predictions["logits"][0], axis=-1))


def instance_map(predictions: dict, index: int, descriptor) -> tuple[np.ndarray | None, dict]:
  """Image ``index``'s instance ids (1..M, uint16; None without instances) and their scores
  ``{(class, id): score}``, from ``instances`` (scored), ``instance`` or ``panoptic``."""
  if "instances" in predictions:
    found = predictions["instances"][index]
    instance = np.zeros(predictions["semantic"][index].shape, np.uint16)
    scores = {}
    for number, (mask, cls, score) in enumerate(
      zip(found["masks"], found["classes"], found["scores"]), start=1
    ):
      instance[mask] = number
      scores[(int(cls), number)] = float(score)
    return instance, scores
  if "instance" in predictions:
    return np.asarray(predictions["instance"][index], np.uint16), {}
  if "panoptic" in predictions:
    ids = np.asarray(predictions["panoptic"][index])
    thing = np.isin(ids // descriptor.label_divisor, descriptor.thing_classes) & (
      ids % descriptor.label_divisor > 0
    )
    _, numbered = np.unique(np.where(thing, ids, -1), return_inverse=True)
    return np.where(thing, numbered.reshape(ids.shape), 0).astype(np.uint16), {}
  return None, {}


def list_inputs(pattern: str) -> list[str]:
  """The image files of a directory, or of a glob pattern, sorted."""
  import glob  # pylint: disable=import-outside-toplevel

  if os.path.isdir(pattern):
    pattern = os.path.join(pattern, "*")
  paths = sorted(
    p for p in glob.glob(pattern) if os.path.splitext(p)[1].lower() in readers.IMAGE_EXTENSIONS
  )
  if not paths:
    raise FileNotFoundError(f"no images ({', '.join(readers.IMAGE_EXTENSIONS)}) match {pattern}")
  return paths


def read_input(predictor: Predictor, path: str) -> np.ndarray:
  """One image file (its alpha channel dropped) normalised as the run's training images were
  (`segjax.data.intensity.prepare_image`, in numpy)."""
  raw = readers.read_image(path)
  image = raw[..., :3] if raw.shape[-1] == 4 else raw
  return intensity.prepare_image(image, predictor.config.data)


def predict_file(predictor: Predictor, path: str) -> tuple[dict, np.ndarray]:
  """``(predictions, class probabilities [H,W,C])`` of one image file (`read_input`)."""
  return predictor.predict_image(read_input(predictor, path))


def predict_group(predictor: Predictor, paths) -> list[tuple[dict, int, np.ndarray]]:
  """``[(predictions, index in them, probabilities)]`` of image files: whole images of one size
  share a batch split over the process's devices (`Predictor.batches_whole_images`); otherwise
  one image at a time (its sliding windows split over the devices)."""
  images = [read_input(predictor, path) for path in paths]
  if not predictor.batches_whole_images():
    return [_single(predictor.predict_image(image)) for image in images]
  out = [None] * len(images)
  shapes: dict[tuple, list[int]] = {}
  for i, image in enumerate(images):
    shapes.setdefault(image.shape, []).append(i)
  for indices in shapes.values():
    predictions = predictor.predict_batch(np.stack([images[i] for i in indices]))
    for k, i in enumerate(indices):
      out[i] = (predictions, k, np.asarray(jax.nn.softmax(predictions["logits"][k], axis=-1)))
  return out


def _single(result):
  predictions, probs = result
  return predictions, 0, probs
