"""Inference on images of any size: the padded sliding window and test-time augmentation.

Both take ``apply_fn(images [B,h,w,C]) -> logits [B,h,w,K]`` (a compiled model in eval mode) and
numpy images, and return class scores; `segjax.predict` uses them for pre-labels.
"""

from __future__ import annotations

import contextlib
import functools

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from segjax import files
from segjax.data import patches


# ================================================================================================
# Padded sliding window
# ================================================================================================
def blend_weights(window, blend: str = "gaussian", sigma_scale: float = 0.125) -> np.ndarray:
  """``[h, w]`` weights of one window: all ones (``"uniform"``) or a Gaussian centred on the window
  with sigma = ``sigma_scale`` × side (nnU-Net's choice), scaled to a maximum of 1 and floored at
  1e-6 (never 0). The floor must stay tiny: a window's edge pixels (which saw its zero padding)
  must weigh far less than the same pixel in a neighbouring window's corner; a floor of 1e-3 made
  them equal and left seams."""
  h, w = window
  if blend == "uniform":
    return np.ones((h, w), np.float32)
  if blend != "gaussian":
    raise ValueError(f"blend must be 'gaussian' or 'uniform', not {blend!r}")
  gy = np.exp(-0.5 * ((np.arange(h) - (h - 1) / 2) / (sigma_scale * h)) ** 2)
  gx = np.exp(-0.5 * ((np.arange(w) - (w - 1) / 2) / (sigma_scale * w)) ** 2)
  weights = np.outer(gy, gx)
  return np.maximum(weights / weights.max(), 1e-6).astype(np.float32)


def _source_index(index: np.ndarray, size: int, mode: str):
  """Maps coordinates of the padded image to the source (``-1`` = constant padding)."""
  if mode == "edge":
    return np.clip(index, 0, size - 1)
  if mode == "constant":
    return np.where((index >= 0) & (index < size), index, -1)
  if mode == "reflect":  # numpy's "reflect": ... 2 1 | 0 1 2 ... n-1 | n-2 ...
    if size == 1:
      return np.zeros_like(index)
    period = 2 * (size - 1)
    index = np.abs(index) % period
    return np.where(index >= size, period - index, index)
  raise ValueError(f"pad_mode must be 'reflect', 'constant' or 'edge', not {mode!r}")


def _gather(image, rows, cols):
  """``image[rows][:, cols]`` with -1 meaning zero padding; reads only those rows (memmaps too)."""
  valid_rows, valid_cols = rows >= 0, cols >= 0
  block = np.asarray(image[np.where(valid_rows, rows, 0)])
  block = block[:, np.where(valid_cols, cols, 0)]
  if not (valid_rows.all() and valid_cols.all()):
    block = block * (valid_rows[:, None] & valid_cols[None, :])[..., None].astype(block.dtype)
  return block


class SlidingWindow:
  """The window grid of a padded sliding window over an ``[H, W, ...]`` image.

  The image is padded by ``margin = (window - stride) // 2`` on every side (more at the bottom and
  right when it is smaller than the window), so border pixels are seen with context like inner
  ones; windows step by ``stride = round(window * (1 - overlap))`` and the last row/column of
  windows is aligned to the padded border.
  """

  def __init__(self, height, width, window, overlap=0.25, pad_mode="reflect"):
    self.height, self.width = height, width
    self.window = tuple(window)
    if not 0 <= overlap < 1:
      raise ValueError(f"overlap must be in [0, 1), not {overlap}")
    self.stride = tuple(max(1, int(round(w * (1 - overlap)))) for w in self.window)
    self.margin = tuple((w - s) // 2 for w, s in zip(self.window, self.stride))
    self.padded = tuple(
      max(n + 2 * m, w) for n, m, w in zip((height, width), self.margin, self.window)
    )
    self.rows = patches.grid_starts(self.padded[0], self.window[0], self.stride[0])
    self.cols = patches.grid_starts(self.padded[1], self.window[1], self.stride[1])
    self.pad_mode = pad_mode
    self.row_index = _source_index(np.arange(self.padded[0]) - self.margin[0], height, pad_mode)
    self.col_index = _source_index(np.arange(self.padded[1]) - self.margin[1], width, pad_mode)


@functools.lru_cache(maxsize=8)  # one compilation per (apply_fn, output), not one per image
def _scores_fn(apply_fn, output: str):
  if output == "probs":
    return jax.jit(lambda x: jax.nn.softmax(apply_fn(x).astype(jax.numpy.float32), axis=-1))
  if output == "logits":
    return jax.jit(lambda x: apply_fn(x).astype(jax.numpy.float32))
  raise ValueError(f"output must be 'probs' or 'logits', not {output!r}")


def sliding_window_rows(
  apply_fn,
  image,
  *,
  window,
  overlap=0.25,
  pad_mode="reflect",
  blend="gaussian",
  batch_size=8,
  output="probs",
):
  """Yields ``(y0, y1, scores [y1-y0, W, C])`` blocks of final per-class scores, top to bottom.

  Only the rows of windows that overlap the current block are held in memory, so peak memory
  grows with the window and the image width, not with the image area; the blocks are exactly the
  rows of `sliding_window_predict`'s result. ``image`` may be a memory-mapped array.
  """
  height, width = image.shape[:2]
  grid = SlidingWindow(height, width, window, overlap, pad_mode)
  weights = blend_weights(grid.window, blend)[..., None]
  scores_fn = _scores_fn(apply_fn, output)
  wh, ww = grid.window
  acc = norm = None
  acc_top = 0  # padded row of acc[0]
  emitted = 0  # image rows written so far
  for r, row in enumerate(grid.rows):
    strip = _gather(image, grid.row_index[row : row + wh], grid.col_index).astype(np.float32)
    tiles = np.stack([strip[:, c : c + ww] for c in grid.cols])
    scores = []
    for start in range(0, len(tiles), batch_size):
      chunk = tiles[start : start + batch_size]
      padded = (
        np.concatenate([chunk, np.zeros((batch_size - len(chunk),) + chunk.shape[1:], chunk.dtype)])
        if len(chunk) < batch_size
        else chunk
      )
      scores.append(np.asarray(scores_fn(padded))[: len(chunk)])  # one compiled shape
    scores = np.concatenate(scores)
    if acc is None:
      acc = np.zeros((0, grid.padded[1], scores.shape[-1]), np.float32)
      norm = np.zeros((0, grid.padded[1], 1), np.float32)
    need = row + wh - acc_top - acc.shape[0]
    if need > 0:
      acc = np.concatenate([acc, np.zeros((need,) + acc.shape[1:], np.float32)])
      norm = np.concatenate([norm, np.zeros((need,) + norm.shape[1:], np.float32)])
    for tile, col in zip(scores, grid.cols):
      acc[row - acc_top : row - acc_top + wh, col : col + ww] += weights * tile
      norm[row - acc_top : row - acc_top + wh, col : col + ww] += weights
    final_until = grid.rows[r + 1] if r + 1 < len(grid.rows) else grid.padded[0]
    # padded rows [acc_top, final_until) are final; emit those inside the image
    lo = max(acc_top, grid.margin[0] + emitted)
    hi = min(final_until, grid.margin[0] + height)
    if hi > lo:
      block = acc[lo - acc_top : hi - acc_top] / norm[lo - acc_top : hi - acc_top]
      yield (
        lo - grid.margin[0],
        hi - grid.margin[0],
        block[:, grid.margin[1] : grid.margin[1] + width],
      )
      emitted = hi - grid.margin[0]
    drop = final_until - acc_top
    acc, norm, acc_top = acc[drop:], norm[drop:], final_until


def sliding_window_predict(
  apply_fn,
  image,
  *,
  window,
  overlap=0.25,
  pad_mode="reflect",
  blend="gaussian",
  batch_size=8,
  output="probs",
) -> np.ndarray:
  """Per-class scores ``[H, W, C]`` of an image ``[H, W, Cin]`` of any size (smaller than the
  window too) by a padded sliding window (see `SlidingWindow`): windows are batched under one
  compiled ``apply_fn`` (``[B, h, w, Cin] -> [B, h, w, C]`` logits), their softmax scores
  (``output="probs"``, or the logits) blended with ``blend`` weights, and the padding cropped."""
  blocks = [
    block
    for _, _, block in sliding_window_rows(
      apply_fn,
      image,
      window=window,
      overlap=overlap,
      pad_mode=pad_mode,
      blend=blend,
      batch_size=batch_size,
      output=output,
    )
  ]
  return np.concatenate(blocks)


def sliding_window_to_file(
  apply_fn, image, labels_path: str, *, scores_path: str | None = None, **kwargs
) -> np.ndarray:
  """Writes the label map (uint8/uint16 ``.npy``, memory-mapped) and optionally the float16 class
  scores strip by strip; returns the label memmap. For images too large to hold their scores."""
  height, width = image.shape[:2]
  labels = scores = None
  with contextlib.ExitStack() as stack:  # each file renamed into place once it is complete
    for y0, y1, block in sliding_window_rows(apply_fn, image, **kwargs):
      if labels is None:
        dtype = np.uint8 if block.shape[-1] <= 256 else np.uint16
        labels = np.lib.format.open_memmap(
          stack.enter_context(files.atomic_path(labels_path)), "w+", dtype, (height, width)
        )
        if scores_path:
          scores = np.lib.format.open_memmap(
            stack.enter_context(files.atomic_path(scores_path)),
            "w+",
            np.float16,
            (height, width, block.shape[-1]),
          )
      labels[y0:y1] = np.argmax(block, axis=-1)
      if scores is not None:
        scores[y0:y1] = block
    for array in (labels, scores):
      if array is not None:
        array.flush()
  return np.load(labels_path, mmap_mode="r")


# ================================================================================================
# Test-time augmentation
# ================================================================================================
def tta_predict(apply_fn, image, *, scales=(1.0,), flip=False, window=None, **window_kwargs):
  """Class probabilities ``[H, W, C]`` averaged over ``scales`` (bilinear resizing of the image,
  the scores resized back) and, with ``flip``, horizontal flips; each pass uses the sliding window
  when ``window`` is given, else one whole-image forward pass. (HMSA models combine scales
  themselves: give them ``apply(..., scales=...)`` as ``apply_fn`` and ``scales=(1.0,)`` here.)"""
  height, width = image.shape[:2]
  total = None
  passes = 0
  for scale in scales:
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    scaled = (
      image
      if scale == 1.0
      else cv2.resize(np.asarray(image, np.float32), size, interpolation=cv2.INTER_LINEAR)
    )
    if scaled.ndim == 2:
      scaled = scaled[..., None]
    for flipped in (False, True) if flip else (False,):
      x = scaled[:, ::-1] if flipped else scaled
      if window is not None:
        probs = sliding_window_predict(apply_fn, x, window=window, output="probs", **window_kwargs)
      else:
        logits = np.asarray(apply_fn(np.asarray(x, np.float32)[None]))[0]
        probs = np.asarray(jax.nn.softmax(logits, axis=-1))
      if flipped:
        probs = probs[:, ::-1]
      if scale != 1.0:
        probs = cv2.resize(
          np.ascontiguousarray(probs), (width, height), interpolation=cv2.INTER_LINEAR
        )
        if probs.ndim == 2:
          probs = probs[..., None]
      total = probs if total is None else total + probs
      passes += 1
  return total / passes


# ================================================================================================
# Test-time augmentation inside a compiled step (evaluation)
# ================================================================================================
# (quarter turns, horizontal flip) of each pass: "flip" is MMSegmentation's flip test, "d4" the
# eight symmetries of the square (for data without a preferred orientation: cells, aerial images).
EVAL_TTA = {
  "": ((0, False),),
  "flip": ((0, False), (0, True)),
  "d4": tuple((turns, flip) for turns in range(4) for flip in (False, True)),
}


def dihedral_tta(logits_fn, images, mode: str):
  """``log`` of the class probabilities ``[B,H,W,K]`` of ``logits_fn(images)`` averaged over the
  passes of ``EVAL_TTA[mode]``: each pass rotates the images by quarter turns and/or flips them
  left-right, and the probabilities back (``jnp``, to call inside ``jax.jit``). The passes that
  give images of one shape run as one batch (all of them for square images): one forward pass
  of ``len(passes) × B`` images to compile, not one per pass. ``mode=""`` is
  ``logits_fn(images)`` itself."""
  if mode not in EVAL_TTA:
    raise ValueError(f"config.eval_tta={mode!r}; use one of {sorted(EVAL_TTA)}")
  if mode == "":
    return logits_fn(images)
  passes = EVAL_TTA[mode]
  square = images.shape[1] == images.shape[2]
  groups = [passes] if square else [[p for p in passes if p[0] % 2 == odd] for odd in (0, 1)]
  total = 0.0
  for group in filter(None, groups):
    views = []
    for turns, flip in group:
      x = jnp.rot90(images, turns, axes=(1, 2))
      views.append(x[:, :, ::-1] if flip else x)
    probs = jax.nn.softmax(logits_fn(jnp.concatenate(views)).astype(jnp.float32), axis=-1)
    for (turns, flip), p in zip(group, jnp.split(probs, len(group))):
      p = p[:, :, ::-1] if flip else p
      total = total + jnp.rot90(p, -turns, axes=(1, 2))
  return jnp.log(jnp.maximum(total / len(passes), jnp.finfo(jnp.float32).tiny))
