"""Inference: predicted class maps, and side-by-side pictures of predictions.

The padded sliding window and test-time augmentation build on ``predict_logits``.
"""
from __future__ import annotations

import os

import cv2
import jax
import numpy as np

from segjax import sharding
from segjax.data import pipeline
from segjax.data.descriptor import DatasetDescriptor


def make_predict_fn(model):
  """Compiled ``(variables, images [B,H,W,3]) -> logits [B,H,W,C]`` in eval mode."""
  return jax.jit(lambda variables, images: model.apply(variables, images, train=False)["logits"])


def denormalize(image: np.ndarray, mean, std) -> np.ndarray:
  """Inverts ``ops.normalize`` to a uint8 RGB picture."""
  pixels = (np.asarray(image, np.float32) * np.asarray(std) + np.asarray(mean)) * 255.0
  return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def side_by_side(image: np.ndarray, prediction: np.ndarray, descriptor: DatasetDescriptor,
                 label: np.ndarray | None = None, alpha: float = 0.55) -> np.ndarray:
  """``[H, k*W, 3]`` uint8: the image, the ground truth (if given), the prediction over the image."""
  overlay = (alpha * descriptor.colorize(prediction) + (1 - alpha) * image).astype(np.uint8)
  panels = [image] + ([descriptor.colorize(label)] if label is not None else []) + [overlay]
  gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
  return np.concatenate(sum(([p, gap] for p in panels), [])[:-1], axis=1)


def write_png(path: str, rgb: np.ndarray) -> None:
  """Writes an RGB picture atomically (temporary file, then rename)."""
  tmp = f"{path}.tmp{os.getpid()}.png"
  if not cv2.imwrite(tmp, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
    raise OSError(f"Could not write {path}.")
  os.replace(tmp, path)


def draw_split_predictions(model, variables, source, config, mesh, output_dir: str) -> list[str]:
  """Predicts ``config.predict.num_images`` images of ``config.predict.split`` and draws them."""
  os.makedirs(output_dir, exist_ok=True)
  predict = make_predict_fn(model)
  ds, _ = pipeline.eval_dataset(source, config.data, config.predict.split,
                                local_batch_size=sharding.local_batch_size(config.eval_batch_size, mesh),
                                process_index=jax.process_index(), process_count=jax.process_count())
  paths = []
  for batch in pipeline.as_numpy(ds):
    logits = predict(variables, sharding.global_batch({"image": batch["image"]}, mesh)["image"])
    predictions = np.asarray(jax.device_get(jax.numpy.argmax(logits, -1)))
    for i in np.flatnonzero(batch["valid"]):
      if len(paths) >= config.predict.num_images:
        return paths
      image = denormalize(batch["image"][i], config.data.mean, config.data.std)
      picture = side_by_side(image, predictions[i], source.descriptor, batch["semantic"][i])
      path = os.path.join(output_dir, f"{config.predict.split}_{len(paths):04d}.png")
      if jax.process_index() == 0:
        write_png(path, picture)
      paths.append(path)
  return paths
