"""Pictures of a split: image, ground truth and a trained model's prediction side by side."""

from __future__ import annotations

import os

import jax
import numpy as np

from segjax import visualize
from segjax.data import pipeline


def draw_split(predictor, source, output_dir: str) -> list[str]:
  """Pictures of ``config.predict.num_images`` images of ``config.predict.split`` (in the order of
  `segjax.data.pipeline.eval_dataset`: grouped by size): image, ground truth and prediction
  (under the inference spec of ``config.inference``; panoptic maps when
  the chain makes them), each at the image's own size, one file each, and all of them in
  ``contact_sheet.png``."""
  config, descriptor = predictor.config, predictor.descriptor
  os.makedirs(output_dir, exist_ok=True)
  ds, _ = pipeline.eval_dataset(source, config.data, config.predict.split, local_batch_size=8)
  paths, pictures = [], []
  whole = predictor.batches_whole_images()
  for batch in pipeline.as_numpy(ds, source):
    if len(paths) >= config.predict.num_images:
      break
    if whole:
      predictions = predictor.predict_batch(batch["image"])
    for i in np.flatnonzero(batch["valid"])[: config.predict.num_images - len(paths)]:
      own = np.s_[: batch["size"][i][0], : batch["size"][i][1]]  # the image, not its padding
      if not whole:  # the sliding window / test-time augmentation of config.predict
        predictions, _ = predictor.predict_image(batch["image"][i][own])
      j = i if whole else 0
      panoptic = "panoptic" in predictions and "panoptic" in batch
      shown = (predictions["panoptic"] if panoptic else predictions["semantic"])[j][own]
      truth = batch["panoptic" if panoptic else "semantic"][i][own]
      image = visualize.denormalize(batch["image"][i][own], config.data.mean, config.data.std)
      picture = visualize.side_by_side(image, shown, descriptor, truth, panoptic=panoptic)
      path = os.path.join(output_dir, f"{config.predict.split}_{len(paths):04d}.png")
      if jax.process_index() == 0:
        visualize.write_png(path, picture)
      paths.append(path)
      pictures.append(picture)
  if pictures and jax.process_index() == 0:
    visualize.write_png(
      os.path.join(output_dir, "contact_sheet.png"), visualize.contact_sheet(pictures)
    )
  return paths
