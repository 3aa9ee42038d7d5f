"""Inference on images of any size: the inference `Spec` and the streaming sliding window.

`Spec` (``config.inference``) is the one protocol of evaluation and prediction: a padded sliding
window, multi-scale and flip / D4 test-time augmentation and the model's own scales, in ``jnp``,
compiled with the model and batched over the devices. `sliding_window_rows` and
`sliding_window_to_file` stream the same window grid over images larger than memory (rasters),
one row of windows at a time, from ``apply_fn(images [B,h,w,C]) -> logits [B,h,w,K]``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

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
# The inference spec: window, scales, symmetries and the model's own scales, compiled
# ================================================================================================
# (quarter turns, horizontal flip) of each pass: "flip" is MMSegmentation's flip test, "d4" the
# eight symmetries of the square (for data without a preferred orientation: cells, aerial images).
TTA = {
  "": ((0, False),),
  "flip": ((0, False), (0, True)),
  "d4": tuple((turns, flip) for turns in range(4) for flip in (False, True)),
}
BLENDS = ("gaussian", "uniform")
PAD_MODES = ("reflect", "constant", "edge")


@dataclasses.dataclass(frozen=True)
class Spec:
  """How a model's outputs become per-pixel class scores, the same in training-time evaluation,
  `experiments/evaluate.py`, `experiments/predict.py` and the Label Studio backend
  (``config.inference``; an entry of ``config.evals`` may override any field):

  - ``window`` ``(h, w)``: a padded sliding window (`SlidingWindow`), ``window_batch`` windows per
    forward pass, their probabilities blended with ``blend`` weights (`blend_weights`) over an
    ``overlap``; ``None``: one pass over the whole image.
  - ``scales``: the image resized by each factor (bilinear, half-pixel centres, as OpenCV's and
    PyTorch's ``align_corners=False``), the probabilities resized back and averaged.
  - ``tta``: the passes of `TTA` (``"flip"``, ``"d4"``) at every scale, averaged.
  - ``model_scales``: passed to the model as ``scales=`` (models that combine scales themselves,
    as HMSA's learned attention does); the model must take a ``scales`` argument.

  With none of these the model's outputs pass unchanged (every head); otherwise only
  ``logits`` = the log of the averaged probabilities (``softmax(log p) = p``).
  """

  window: tuple[int, int] | None = None
  overlap: float = 0.25
  blend: str = "gaussian"
  pad_mode: str = "reflect"
  window_batch: int = 8
  scales: tuple[float, ...] = (1.0,)
  tta: str = ""
  model_scales: tuple[float, ...] | None = None

  def __post_init__(self):
    def bad(key, value, want):
      raise ValueError(f"config.inference.{key}={value!r}: {want}")

    if self.window is not None:
      window = tuple(int(w) for w in self.window)
      if len(window) != 2 or min(window) < 1:
        bad("window", self.window, "give (height, width) in pixels, or None")
      object.__setattr__(self, "window", window)
    if not 0 <= self.overlap < 1:
      bad("overlap", self.overlap, "use a fraction in [0, 1)")
    if self.blend not in BLENDS:
      bad("blend", self.blend, f"use one of {list(BLENDS)}")
    if self.pad_mode not in PAD_MODES:
      bad("pad_mode", self.pad_mode, f"use one of {list(PAD_MODES)}")
    if int(self.window_batch) < 1:
      bad("window_batch", self.window_batch, "use a positive number of windows")
    scales = tuple(float(s) for s in self.scales)
    if not scales or min(scales) <= 0:
      bad("scales", self.scales, "give positive factors, e.g. (0.75, 1.0, 1.25)")
    object.__setattr__(self, "scales", scales)
    if self.tta not in TTA:
      bad("tta", self.tta, f"use one of {sorted(TTA)}")
    if self.model_scales is not None:
      object.__setattr__(self, "model_scales", tuple(float(s) for s in self.model_scales))

  @classmethod
  def from_config(cls, config, overrides=None) -> Spec:
    """The spec of ``config.inference`` (a run's config from before it existed gives the
    defaults), with the fields of ``overrides`` (an entry of ``config.evals``) on top."""
    fields = {f.name for f in dataclasses.fields(cls)}
    settings = {}
    for source, prefix in ((config.get("inference"), "config.inference"), (overrides, "")):
      for key, value in dict(source or {}).items():
        if key not in fields:
          raise KeyError(
            f"{prefix or 'inference'}.{key}: unknown key; the keys are {sorted(fields)}"
          )
        settings[key] = value
    if settings.get("window") == ():
      settings["window"] = None
    if settings.get("model_scales") == ():
      settings["model_scales"] = None
    return cls(**settings)

  @property
  def averages(self) -> bool:
    """Whether the spec averages probabilities (a window, several scales or TTA passes)."""
    return self.window is not None or self.scales != (1.0,) or self.tta != ""

  def model_kwargs(self) -> dict:
    return {} if self.model_scales is None else {"scales": self.model_scales}

  def check_chain(self, chain) -> None:
    """A spec that averages probabilities gives only ``logits``: the chain may read no more."""
    if self.averages and not chain.reads() <= {"logits"}:
      raise ValueError(
        f"config.inference ({self.describe()}) averages class probabilities; the chain "
        f"{chain.spec!r} also reads {sorted(chain.reads() - {'logits'})}"
      )

  def describe(self) -> str:
    parts = [f"window={self.window}, overlap={self.overlap}"] if self.window else []
    parts += [f"scales={self.scales}"] if self.scales != (1.0,) else []
    parts += [f"tta={self.tta!r}"] if self.tta else []
    parts += [f"model_scales={self.model_scales}"] if self.model_scales else []
    return ", ".join(parts) or "one pass"

  def outputs(self, apply_fn, images, batch_sharding=None) -> dict:
    """The outputs of ``apply_fn(images [B,H,W,C], **model_kwargs) -> dict`` under this spec
    (``jnp``, to call inside ``jax.jit``). ``batch_sharding`` (a `NamedSharding` of a leading
    batch axis) splits each forward pass's windows over the devices when it divides them."""
    kwargs = self.model_kwargs()
    if not self.averages:
      return apply_fn(images, **kwargs)
    logits_fn = lambda x: apply_fn(x, **kwargs)["logits"]
    height, width = images.shape[1:3]
    total = 0.0
    for scale in self.scales:
      size = (max(1, int(round(height * scale))), max(1, int(round(width * scale))))
      x = images if size == (height, width) else _resize(images, size)
      probs = _symmetries(lambda v: self._probs(logits_fn, v, batch_sharding), x, self.tta)
      total = total + (probs if size == (height, width) else _resize(probs, (height, width)))
    mean = total / len(self.scales)
    return {"logits": jnp.log(jnp.maximum(mean, jnp.finfo(jnp.float32).tiny))}

  def _probs(self, logits_fn, images, batch_sharding):
    """Class probabilities ``[B,H,W,K]``: one pass, or the blended sliding window."""
    forward = lambda x: jax.nn.softmax(
      logits_fn(_constrain(x, batch_sharding)).astype(jnp.float32), axis=-1
    )
    if self.window is None:
      return forward(images)
    batch, height, width, _ = images.shape
    grid = SlidingWindow(height, width, self.window, self.overlap, self.pad_mode)
    wh, ww = grid.window
    padded = _pad(images, grid)
    starts = [(r, c) for r in grid.rows for c in grid.cols]
    tiles = jnp.stack([padded[:, r : r + wh, c : c + ww] for r, c in starts], axis=1)  # [B,N,...]
    per_pass = min(int(self.window_batch), len(starts))
    extra = -len(starts) % per_pass
    if extra:  # one compiled shape per pass: pad with copies of the last window, cut below
      tiles = jnp.concatenate([tiles, jnp.repeat(tiles[:, -1:], extra, axis=1)], axis=1)
    chunks = tiles.reshape(batch, -1, per_pass, *tiles.shape[2:]).swapaxes(0, 1)

    def one_pass(chunk):  # [B, k, h, w, C]: the images' rows stay where the batch is split
      probs = forward(chunk.reshape(batch * per_pass, *chunk.shape[2:]))
      return probs.reshape(batch, per_pass, *probs.shape[1:])

    probs = jax.lax.map(one_pass, chunks)  # [passes, B, k, h, w, K], one pass at a time
    probs = probs.swapaxes(0, 1).reshape(batch, -1, wh, ww, probs.shape[-1])
    host_weights = blend_weights(grid.window, self.blend)
    weights = jnp.asarray(host_weights)[None, :, :, None]
    acc = jnp.zeros((batch, *grid.padded, probs.shape[-1]), jnp.float32)
    norm = np.zeros(grid.padded, np.float32)
    for n, (r, c) in enumerate(starts):
      acc = acc.at[:, r : r + wh, c : c + ww].add(weights * probs[:, n])
      norm[r : r + wh, c : c + ww] += host_weights
    (my, mx) = grid.margin
    return acc[:, my : my + height, mx : mx + width] / norm[my : my + height, mx : mx + width, None]


def _constrain(x, batch_sharding):
  if batch_sharding is None or x.shape[0] % batch_sharding.mesh.devices.size:
    return x
  return jax.lax.with_sharding_constraint(x, batch_sharding)


def _resize(x, size):
  """Bilinear resizing of ``[B,H,W,C]`` to ``size`` with half-pixel centres and no antialiasing
  (OpenCV's ``INTER_LINEAR``, PyTorch's ``align_corners=False``)."""
  return jax.image.resize(
    x.astype(jnp.float32), (x.shape[0], *size, x.shape[-1]), "bilinear", antialias=False
  )


def _pad(images, grid: SlidingWindow):
  """``images [B,H,W,C]`` padded as the window grid says (``-1`` source index: zeros)."""
  rows, cols = grid.row_index, grid.col_index
  x = jnp.take(images, np.maximum(rows, 0), axis=1)
  x = jnp.take(x, np.maximum(cols, 0), axis=2)
  if (rows < 0).any() or (cols < 0).any():
    x = x * ((rows >= 0)[:, None] & (cols >= 0)[None, :])[None, :, :, None]
  return x


def _symmetries(probs_fn, images, mode: str):
  """The class probabilities of ``probs_fn(images)`` averaged over the passes of ``TTA[mode]``:
  each pass rotates the images by quarter turns and/or flips them left-right, and the
  probabilities back. Passes that give images of one shape run as one batch (all of them for
  square images): one forward pass of ``len(passes) × B`` images to compile, not one per pass."""
  passes = TTA[mode]
  if len(passes) == 1:
    return probs_fn(images)
  square = images.shape[1] == images.shape[2]
  groups = [passes] if square else [[p for p in passes if p[0] % 2 == odd] for odd in (0, 1)]
  total = 0.0
  for group in filter(None, groups):
    views = []
    for turns, flip in group:
      x = jnp.rot90(images, turns, axes=(1, 2))
      views.append(x[:, :, ::-1] if flip else x)
    probs = probs_fn(jnp.concatenate(views))
    for (turns, flip), p in zip(group, jnp.split(probs, len(group))):
      p = p[:, :, ::-1] if flip else p
      total = total + jnp.rot90(p, -turns, axes=(1, 2))
  return total / len(passes)
