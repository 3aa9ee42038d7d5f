"""Label Studio's brush masks: the bit-packed run-length code of ``rle-pack`` (thi.ng/umbrella),
which Label Studio's editor writes and label-studio-sdk's ``converter.brush`` reads and writes.

A brush region is an RGBA picture of the image's size, flattened row by row (``H * W * 4`` bytes),
then packed as bits, most significant first::

  32 bits  number of values            5 bits  word size - 1 (8-bit words: 7)
  4 x 4    bits of the four run-length fields - 1 (3, 4, 8, 16 bits)
  then runs: 1 bit  "repeat" flag, 2 bits  which length field, that many bits  length - 1, and
             either one word repeated (flag 1) or ``length`` literal words (flag 0)

and padded with zero bits to whole bytes. Masks are written as label-studio-sdk's ``mask2rle``
writes them (every channel of an inside pixel 255, runs of 1 as literals, longer runs repeated
with the shortest length field that holds them), so `encode` gives the SDK's bytes exactly. A
pixel is inside when its alpha is at least 128 (the editor's anti-aliased stroke edges are below).
"""

from __future__ import annotations

import numpy as np

RLE_SIZES = (3, 4, 8, 16)


def _runs(values: np.ndarray):
  """``(lengths, values)`` of the runs of equal values of a 1-D array."""
  if values.size == 0:
    return np.zeros(0, np.int64), values
  ends = np.append(np.flatnonzero(values[1:] != values[:-1]), values.size - 1)
  return np.diff(np.append(-1, ends)), values[ends]


def encode_values(values: np.ndarray) -> list[int]:
  """The packed bytes of a 1-D array of 8-bit values (label-studio-sdk's ``encode_rle``)."""
  values = np.asarray(values).ravel()
  if values.size and (values.min() < 0 or values.max() > 255):
    raise ValueError("brush RLE holds 8-bit values (0..255)")
  bits = [f"{values.size:032b}", f"{7:05b}", "".join(f"{s - 1:04b}" for s in RLE_SIZES)]
  lengths, run_values = _runs(values)
  for length, value in zip(lengths.tolist(), run_values.tolist()):
    word = f"{value:08b}"
    if length == 1:
      bits.append("000000" + word)
      continue
    while length > 2**16:  # longer than the widest field: full 65,536-value runs first
      bits.append("111" + f"{2**16 - 1:016b}" + word)
      length -= 2**16
    field = next(i for i, size in enumerate(RLE_SIZES) if length <= 2**size)
    bits.append(f"1{field:02b}{length - 1:0{RLE_SIZES[field]}b}" + word)
  text = "".join(bits)
  text += "0" * (8 - len(text) % 8)  # the SDK always pads, a whole zero byte when aligned
  return np.packbits(np.frombuffer(text.encode(), np.uint8) - ord("0")).tolist()


class _Bits:
  """A bit reader over packed bytes: single fields parsed from a string of '0'/'1' (one slice and
  one ``int(..., 2)`` a field), blocks of literal words unpacked at once."""

  def __init__(self, data):
    self.bits = np.unpackbits(np.asarray(data, np.uint8))
    self.text = (self.bits + ord("0")).tobytes().decode("ascii")
    self.position = 0

  def _advance(self, count: int) -> int:
    start = self.position
    if start + count > self.bits.size:
      raise ValueError("brush RLE ends in the middle of a run (truncated or not Label Studio RLE)")
    self.position = start + count
    return start

  def read(self, count: int) -> int:
    start = self._advance(count)
    return int(self.text[start : start + count], 2)

  def read_words(self, number: int, word: int) -> np.ndarray:
    """``number`` consecutive ``word``-bit values."""
    start = self._advance(number * word)
    block = self.bits[start : start + number * word].reshape(number, word).astype(np.int64)
    return block @ (1 << np.arange(word - 1, -1, -1, dtype=np.int64))


def decode_values(rle) -> np.ndarray:
  """The 1-D array of values of packed bytes ``rle`` (label-studio-sdk's ``decode_rle``)."""
  stream = _Bits(rle)
  count, word = stream.read(32), stream.read(5) + 1
  sizes = [stream.read(4) + 1 for _ in range(4)]
  if word > 8:
    raise ValueError(f"brush RLE with {word}-bit words; Label Studio brushes use 8")
  out = np.zeros(count, np.uint8)
  read, i = stream.read, 0
  while i < count:
    repeat = read(1)
    j = i + 1 + read(sizes[read(2)])
    if j > count:
      raise ValueError(f"brush RLE run past its declared {count} values")
    if repeat:
      value = read(word)
      if value:
        out[i:j] = value
    else:
      out[i:j] = stream.read_words(j - i, word)
    i = j
  return out


def encode(mask: np.ndarray) -> list[int]:
  """A binary mask ``[H, W]`` as Label Studio brush RLE (``value.rle`` of a ``brushlabels``
  result; the result's ``original_height``/``original_width`` give its shape)."""
  mask = np.asarray(mask)
  if mask.ndim != 2:
    raise ValueError(f"a brush mask is 2-D [H, W]; got shape {mask.shape}")
  return encode_values(np.repeat(np.where(mask.ravel() > 0, 255, 0).astype(np.uint8), 4))


def decode(rle, height: int, width: int) -> np.ndarray:
  """The boolean mask ``[height, width]`` of brush RLE ``rle``: pixels whose alpha is >= 128."""
  values = decode_values(rle)
  if values.size != height * width * 4:
    raise ValueError(
      f"brush RLE holds {values.size} values, not {height} x {width} x 4 "
      "(original_height x original_width x RGBA)"
    )
  return values.reshape(height, width, 4)[..., 3] >= 128
