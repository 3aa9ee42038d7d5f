r"""Encodes and decodes brush masks with label-studio-sdk's own functions, for
tests/test_labelstudio.py, which compares `segjax.labelstudio.rle` with them.

Runs in Label Studio's virtual environment (label-studio pulls label-studio-sdk; not segjax, not
JAX), which the tests create (`segjax.labelstudio.server.ensure_installed`):

  VENV/bin/python tools/label_studio_reference.py IN.npz OUT.npz

IN.npz holds masks ``mask_<name>`` (2-D uint8) and RLE byte arrays ``rle_<name>`` (uint8); OUT.npz gets
``sdk_rle_<name>`` = ``converter.brush.mask2rle(mask * 255)`` and ``sdk_decoded_<name>`` =
``converter.brush.decode_rle(rle)``.
"""

import sys

import numpy as np
from label_studio_sdk.converter import brush


def main(source: str, target: str) -> None:
  data = np.load(source)
  out = {}
  for key in data.files:
    kind, index = key.split("_", 1)
    if kind == "mask":
      out[f"sdk_rle_{index}"] = np.asarray(
        brush.mask2rle(data[key].astype(np.uint8) * 255), np.uint8
      )
    elif kind == "rle":
      out[f"sdk_decoded_{index}"] = brush.decode_rle(bytes(data[key].tolist()))
  np.savez(target, **out)


if __name__ == "__main__":
  main(*sys.argv[1:])
