"""segjax against PyTorch/torchvision, on the reference outputs tools/torch_reference.py wrote with
torch and torchvision (tests/fixtures; CI needs no PyTorch): torchvision networks converted by
`segjax.models.from_torchvision` give torchvision's outputs, and the losses PyTorch's values."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import segjax.models
from segjax import losses

from conftest import ROOT

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
# fixture -> (from_torchvision name, keyword arguments of the narrow model)
NETWORKS = {
  "resnet18_w4": ("resnet18", dict(width=4)),
  "deeplabv3_resnet50_w2": ("deeplabv3_resnet50", dict(width=2, aspp_features=8)),
}


@pytest.mark.parametrize("fixture", sorted(NETWORKS))
def test_converted_torchvision_networks_give_torchvisions_outputs(fixture):
  name, kwargs = NETWORKS[fixture]
  model, variables = segjax.models.from_torchvision(
    name, os.path.join(FIXTURES, f"{fixture}.npz"), **kwargs
  )
  io = np.load(os.path.join(FIXTURES, f"{fixture}_io.npz"))
  ours = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, jnp.asarray(io["image"]))
  keys = [k for k in io.files if k != "image" and not k.endswith("_torch_float32")]
  assert keys and set(keys) <= set(ours)
  for key in keys:
    reference = io[key].astype(np.float64)  # torch in float64 (rounded to float32)
    assert ours[key].shape == reference.shape, key
    # segjax's float32 error is PyTorch's own float32 error, up to a factor of 2.
    error = np.max(np.abs(np.asarray(ours[key], np.float64) - reference))
    torch_error = np.max(np.abs(io[key + "_torch_float32"].astype(np.float64) - reference))
    assert error <= 2 * torch_error + 1e-6, (key, error, torch_error)
    assert np.max(np.abs(reference)) > 0.1  # the outputs are not near zero


def test_losses_equal_pytorchs():
  data = json.load(open(os.path.join(FIXTURES, "losses.json")))
  logits, labels = jnp.asarray(data["logits"], jnp.float32), jnp.asarray(data["labels"])
  binary, targets = jnp.asarray(data["binary"], jnp.float32), jnp.asarray(data["targets"])
  assert len(data["cases"]) == 4
  for case in data["cases"]:
    kwargs = dict(case["kwargs"])
    if "class_weights" in kwargs:
      kwargs["class_weights"] = jnp.asarray(kwargs["class_weights"], jnp.float32)
    if case["loss"] == "cross_entropy":
      ours = losses.cross_entropy(logits, labels, **kwargs)
    else:
      ours = losses.binary_cross_entropy(binary, targets, **kwargs)
    assert float(ours) == pytest.approx(case["torch"], rel=2e-6), case
