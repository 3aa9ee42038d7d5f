"""The standard click protocol of interactive segmentation, and its scores.

`next_click` places the click a simulated annotator gives after seeing a prediction: in the
largest error region (``mode="largest"``, the protocol as it is usually described), or at the
error pixel farthest from any boundary over all errors (``mode="farthest"``, RITM's
``Clicker._get_next_click``); in both, at the point of the region farthest from its boundary
(the image border counts as boundary), positive on a missed object pixel, negative on a false one.
`click_sequence` runs ``predict(clicks) -> mask`` for at most ``max_clicks`` clicks;
`number_of_clicks` gives NoC@IoU (the clicks until the IoU first reaches it, ``max_clicks`` when it
never does: a failure), `summarize_clicks` NoC@85 / NoC@90, the failures and the mean IoU after k
clicks (the curve interactive papers draw). `disk_predictor` is the reference without a model:
each click paints (or erases) a disk.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import cv2
import numpy as np


@dataclasses.dataclass(frozen=True)
class Click:
  y: int
  x: int
  positive: bool


def _interior_distance(region: np.ndarray) -> np.ndarray:
  """Euclidean distance of each pixel of ``region`` to the nearest pixel outside it (the image
  border counts as outside); 0 outside."""
  padded = np.pad(region.astype(np.uint8), 1)
  return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


def next_click(
  truth: np.ndarray,
  prediction: np.ndarray,
  ignore: np.ndarray | None = None,
  clicked: Sequence[Click] = (),
  mode: str = "largest",
) -> Click | None:
  """The next simulated click on ``prediction`` (bool ``[H, W]``) of the object ``truth`` (bool
  ``[H, W]``); pixels in ``ignore`` are never errors, and pixels already ``clicked`` are not
  clicked again. None when the prediction has no error left."""
  truth, prediction = np.asarray(truth, bool), np.asarray(prediction, bool)
  if truth.shape != prediction.shape or truth.ndim != 2:
    raise ValueError(
      f"truth {truth.shape} and prediction {prediction.shape}: give two [H, W] masks"
    )
  if mode not in ("largest", "farthest"):
    raise ValueError(f"mode={mode!r}: use 'largest' or 'farthest'")
  keep = np.ones_like(truth) if ignore is None else ~np.asarray(ignore, bool)
  missed, false = truth & ~prediction & keep, ~truth & prediction & keep
  if mode == "largest":
    best = None  # (area, positive, component mask)
    for errors, positive in ((missed, True), (false, False)):
      count, labels, stats, _ = cv2.connectedComponentsWithStats(errors.astype(np.uint8), 8)
      for c in range(1, count):
        area = int(stats[c, cv2.CC_STAT_AREA])
        if best is None or area > best[0]:
          best = (area, positive, labels == c)
    if best is None:
      return None
    _, positive, region = best
    distance = _interior_distance(region)
  else:
    dist_missed, dist_false = _interior_distance(missed), _interior_distance(false)
    positive = dist_missed.max() > dist_false.max()
    distance = dist_missed if positive else dist_false
  for click in clicked:
    distance[click.y, click.x] = 0
  if distance.max() <= 0:
    return None
  y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)  # the first of the maxima
  return Click(int(y), int(x), bool(positive))


def iou(truth: np.ndarray, prediction: np.ndarray, ignore: np.ndarray | None = None) -> float:
  """IoU of two bool masks outside ``ignore`` (1.0 when both are empty)."""
  keep = np.ones(np.shape(truth), bool) if ignore is None else ~np.asarray(ignore, bool)
  truth, prediction = np.asarray(truth, bool) & keep, np.asarray(prediction, bool) & keep
  union = np.count_nonzero(truth | prediction)
  return 1.0 if union == 0 else np.count_nonzero(truth & prediction) / union


def best_overlap(instances: np.ndarray, truth: np.ndarray) -> np.ndarray:
  """The instance of ``instances`` (ids ``[H, W]``, 0 = none) with the largest IoU with the bool
  mask ``truth``, as a bool mask; empty when none overlaps it."""
  ids = np.unique(instances[truth & (instances > 0)])
  return max(
    (instances == i for i in ids),
    key=lambda mask: iou(truth, mask),
    default=np.zeros(np.shape(truth), bool),
  )


def click_sequence(
  predict: Callable[[list[Click]], np.ndarray],
  truth: np.ndarray,
  *,
  max_clicks: int = 20,
  ignore: np.ndarray | None = None,
  mode: str = "largest",
  initial: np.ndarray | None = None,
) -> tuple[list[Click], list[float]]:
  """``(clicks, IoU after each click)`` of the protocol: the first click on ``initial`` (a
  pre-label; default an empty mask), each next one on ``predict(clicks so far)``'s errors,
  ``max_clicks`` at most (it stops early when no error is left, the IoU then held for the
  remaining clicks)."""
  clicks, ious = [], []
  prediction = np.zeros(np.shape(truth), bool) if initial is None else np.asarray(initial, bool)
  for _ in range(max_clicks):
    click = next_click(truth, prediction, ignore, clicks, mode)
    if click is None:
      ious += [ious[-1] if ious else iou(truth, prediction, ignore)] * (max_clicks - len(ious))
      break
    clicks.append(click)
    prediction = np.asarray(predict(list(clicks)), bool)
    ious.append(iou(truth, prediction, ignore))
  return clicks, ious


def number_of_clicks(ious: Sequence[float], threshold: float, max_clicks: int = 20) -> int:
  """NoC@threshold: the clicks until the IoU first reaches ``threshold``; ``max_clicks`` when it
  never does within them (a failure)."""
  for k, value in enumerate(ious[:max_clicks], start=1):
    if value >= threshold:
      return k
  return max_clicks


def summarize_clicks(per_object: Sequence[Sequence[float]], max_clicks: int = 20) -> dict:
  """NoC@85, NoC@90 (means over the objects), failures at 90 % (objects that never reach it in
  ``max_clicks``) and ``miou_at_k`` (the mean IoU after k = 1..max_clicks clicks)."""
  if not per_object:
    raise ValueError("summarize_clicks: no objects")
  curves = np.asarray([list(c[:max_clicks]) for c in per_object], np.float64)
  if curves.shape[1] != max_clicks:
    raise ValueError(f"each object needs {max_clicks} IoUs, got {curves.shape[1]}")
  noc = {t: [number_of_clicks(c, t / 100, max_clicks) for c in curves] for t in (85, 90)}
  return {
    "noc85": float(np.mean(noc[85])),
    "noc90": float(np.mean(noc[90])),
    "failures90": int(sum(not (c >= 0.9).any() for c in curves)),
    "objects": len(curves),
    "miou_at_k": curves.mean(axis=0).tolist(),
  }


def disk_predictor(
  shape, radius: int = 5, initial: np.ndarray | None = None
) -> Callable[[list[Click]], np.ndarray]:
  """The reference without a model: each click paints (positive) or erases (negative) the disk
  ``dy² + dx² <= radius²`` around it, in order, on ``initial`` (a pre-label; default empty)."""
  rows, cols = np.ogrid[: shape[0], : shape[1]]
  start = np.zeros(shape, bool) if initial is None else np.asarray(initial, bool)

  def predict(clicks):
    mask = start.copy()
    for click in clicks:
      mask[(rows - click.y) ** 2 + (cols - click.x) ** 2 <= radius**2] = click.positive
    return mask

  return predict
