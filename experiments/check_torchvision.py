r"""Checks segjax against torchvision/PyTorch numerically (needs torch + torchvision; not a segjax
dependency — use a scratch environment: pip install torch==2.14.1 torchvision==0.29.1 -e .).

  python experiments/check_torchvision.py

1. Weight conversion: randomly initialised torchvision ResNet-18/50 and DeepLabV3-ResNet-50/101
   (with the aux head; BatchNorm parameters random, statistics measured on random images) are converted with
   `segjax.models.pretrained.from_torchvision` (from an in-memory state dict and from an .npz)
   and run in eval mode on the same input; prints the largest absolute difference of the outputs.
2. Losses: cross-entropy (weights, ignore index, label smoothing) and BCE-with-logits (pos_weight)
   against torch.nn.functional on random inputs.
No download: every network starts from random weights.
"""
import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

from segjax import losses  # noqa: E402
from segjax.models import pretrained  # noqa: E402


def calibrate_batchnorm(module, generator):
  """Random BN affine parameters, and running statistics measured on random images (as a trained
  network has them), so that activations stay O(1) and every statistic matters."""
  for m in module.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      with torch.no_grad():
        m.weight.normal_(1, 0.2, generator=generator)
        m.bias.normal_(0, 0.2, generator=generator)
      m.reset_running_stats()
      m.momentum = None  # cumulative average
  module.train()
  with torch.no_grad():
    for _ in range(3):
      module(torch.randn(4, 3, 97, 131, generator=generator))


def compare(name, net, segjax_name, image, *, via_file):
  generator = torch.Generator().manual_seed(0)
  calibrate_batchnorm(net, generator)
  net.eval()
  state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
  if via_file:
    path = os.path.join(tempfile.mkdtemp(), f"{name}.npz")
    np.savez(path, **state)
    model, variables = pretrained.from_torchvision(segjax_name, path)
  else:
    model, variables = pretrained.from_torchvision(segjax_name, state)
  with torch.no_grad():
    out = net(torch.from_numpy(image.transpose(0, 3, 1, 2)))
    out64 = net.double()(torch.from_numpy(image.transpose(0, 3, 1, 2)).double())  # float64 reference
  ours = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, jnp.asarray(image))
  if isinstance(out, dict):  # DeepLabV3: "out" and "aux"
    pairs = [("out", ours["logits"], out["out"], out64["out"])]
    if "aux" in out:
      pairs.append(("aux", ours["aux_logits"], out["aux"], out64["aux"]))
  else:
    pairs = [("layer4", ours["layer4"], out, out64)]
  for label, a, b, c in pairs:
    b, c = (t.numpy().transpose(0, 2, 3, 1) for t in (b, c))
    diff = float(np.max(np.abs(np.asarray(a) - b)))
    ours64 = float(np.max(np.abs(np.asarray(a) - c)))
    theirs64 = float(np.max(np.abs(b - c)))
    print(f"{name:20s} {label:6s} max|segjax-torch| {diff:.1e}; vs torch float64: segjax "
          f"{ours64:.1e}, torch float32 {theirs64:.1e} (max |value| {np.max(np.abs(c)):.2f})")


def main():
  torch.manual_seed(0)
  image = np.random.default_rng(0).normal(size=(2, 97, 131, 3)).astype(np.float32)
  for depth in ("resnet18", "resnet50"):
    net = getattr(torchvision.models, depth)(weights=None)
    trunk = torch.nn.Sequential(*list(net.children())[:-2])  # without avgpool and fc
    trunk.state_dict = net.state_dict  # keep torchvision's key names for the converter
    compare(depth, trunk, depth, image, via_file=False)
  for depth in ("resnet50", "resnet101"):
    net = getattr(torchvision.models.segmentation, f"deeplabv3_{depth}")(
        weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    compare(f"deeplabv3_{depth}", net, f"deeplabv3_{depth}", image, via_file=True)

  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 9, 11, 5)).astype(np.float32) * 3
  labels = rng.integers(0, 5, size=(2, 9, 11))
  labels[0, :3] = 255
  weights = rng.uniform(0.5, 2, size=5).astype(np.float32)
  t_logits, t_labels = torch.from_numpy(logits.transpose(0, 3, 1, 2)), torch.from_numpy(labels)
  for kwargs in (dict(), dict(class_weights=weights), dict(label_smoothing=0.1)):
    ours = float(losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels), **kwargs))
    theirs = float(torch.nn.functional.cross_entropy(
        t_logits, t_labels, ignore_index=255,
        weight=torch.from_numpy(weights) if "class_weights" in kwargs else None,
        label_smoothing=kwargs.get("label_smoothing", 0.0)))
    print(f"cross_entropy {kwargs!s:40.40s} segjax {ours:.7f}  torch {theirs:.7f}  "
          f"diff {abs(ours - theirs):.1e}")
  binary = rng.normal(size=(2, 9, 11)).astype(np.float32) * 3
  targets = rng.integers(0, 2, size=(2, 9, 11))
  ours = float(losses.binary_cross_entropy(jnp.asarray(binary), jnp.asarray(targets), pos_weight=2.5))
  theirs = float(torch.nn.functional.binary_cross_entropy_with_logits(
      torch.from_numpy(binary), torch.from_numpy(targets).float(), pos_weight=torch.tensor(2.5)))
  print(f"binary_cross_entropy pos_weight=2.5          segjax {ours:.7f}  torch {theirs:.7f}  "
        f"diff {abs(ours - theirs):.1e}")


if __name__ == "__main__":
  main()
