r"""Encodes and decodes brush masks with label-studio-sdk's own functions: the reference that
tests/test_labelstudio.py compares `segjax.labelstudio.rle` with.

Runs in Label Studio's virtual environment (label-studio pulls label-studio-sdk; not segjax, not
JAX), which `segjax.labelstudio.server.ensure_installed` creates:

  VENV/bin/python tools/label_studio_reference.py --fixture tests/fixtures/label_studio_rle.npz
  VENV/bin/python tools/label_studio_reference.py IN.npz OUT.npz

``--fixture`` writes the test's fixture (the quick tier needs no Label Studio): for each mask of
`cases` (random, sparse, holed, a single pixel, empty, 1x1, one run of 360,000 values),
``mask_<name>``, ``sdk_rle_<name>`` = ``converter.brush.mask2rle(mask * 255)`` and
``sdk_decoded_<name>`` = ``converter.brush.decode_rle`` of those bytes, with the SDK's version.
With IN.npz (masks ``mask_<name>``, 2-D uint8, and RLE byte arrays ``rle_<name>``), OUT.npz gets
the same of any masks and RLEs (the slow test's live comparison with the installed SDK).
"""

import sys

import numpy as np
from label_studio_sdk.converter import brush


def cases() -> dict:
  rng = np.random.default_rng(0)
  holed = np.zeros((40, 50), bool)
  holed[5:35, 5:45] = True
  holed[15:25, 15:30] = False
  single = np.zeros((9, 11), bool)
  single[4, 6] = True
  return {
    "random_half": rng.random((37, 53)) < 0.5,
    "random_sparse": rng.random((64, 64)) < 0.03,
    "holed": holed,
    "single_pixel": single,
    "empty": np.zeros((5, 7), bool),
    "one_by_one": np.ones((1, 1), bool),
    "full_long_runs": np.ones((300, 300), bool),  # one run of 360,000 > 2^16 values
  }


def reference(masks: dict, codes: dict) -> dict:
  out = {}
  for name, mask in masks.items():
    out[f"sdk_rle_{name}"] = np.asarray(brush.mask2rle(mask.astype(np.uint8) * 255), np.uint8)
  for name, code in codes.items():
    out[f"sdk_decoded_{name}"] = brush.decode_rle(bytes(np.asarray(code).tolist()))
  return out


def main(argv) -> None:
  if argv[0] == "--fixture":
    from importlib import metadata  # pylint: disable=import-outside-toplevel

    masks = cases()
    out = reference(masks, {})
    codes = {name: out[f"sdk_rle_{name}"] for name in masks}
    out.update(reference({}, codes))
    out.update({f"mask_{name}": mask.astype(np.uint8) for name, mask in masks.items()})
    out["sdk_version"] = np.asarray(metadata.version("label-studio-sdk"))
    np.savez_compressed(argv[1], **out)
    return
  data = np.load(argv[0])
  masks = {k[len("mask_") :]: data[k] for k in data.files if k.startswith("mask_")}
  codes = {k[len("rle_") :]: data[k] for k in data.files if k.startswith("rle_")}
  np.savez(argv[1], **reference(masks, codes))


if __name__ == "__main__":
  main(sys.argv[1:])
