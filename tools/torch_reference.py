r"""Writes the PyTorch reference fixtures that tests/test_torch_reference.py compares segjax with.

Needs torch and torchvision only (not segjax, not JAX); run it in a scratch environment:

  python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.14.1 torchvision==0.29.1
  /tmp/torchvenv/bin/python tools/torch_reference.py --output=tests/fixtures

Networks are torchvision's own classes (ResNet, its BasicBlock/Bottleneck and `_make_layer`,
`segmentation.DeepLabV3`, `ASPP`, `FCNHead`) at a reduced width, so that the fixtures stay small:
the base width 64 of `torchvision.models.ResNet` becomes ``width``, and DeepLabHead's 256 ASPP
channels become ``aspp``; every other layout (names, strides, dilations, padding) is torchvision's.
BatchNorm affine parameters are random and the running statistics are measured on random images,
so that every statistic matters. Outputs are computed in float64 from the float32 weights and
stored rounded to float32.

Writes, per network, ``<name>.npz`` (the state dict, torchvision's keys) and ``<name>_io.npz``
(``image`` NHWC; the outputs, NHWC, of the network in float64 and, as
``<output>_torch_float32``, in float32: the float32 rounding error of PyTorch itself), and ``losses.json`` (cross-entropy with
class weights / label smoothing / ignore index, BCE with pos_weight, on the arrays it lists).
"""

import argparse
import json
import os

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models import resnet
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabV3
from torchvision.models.segmentation.fcn import FCNHead

NETWORKS = {
  # name: (segjax from_torchvision name, block, layers, width, dilate layer3/4, aspp channels)
  "resnet18_w4": ("resnet18", resnet.BasicBlock, (2, 2, 2, 2), 4, (False, False), None),
  "deeplabv3_resnet50_w2": (
    "deeplabv3_resnet50",
    resnet.Bottleneck,
    (3, 4, 6, 3),
    2,
    (True, True),
    8,
  ),
}


def narrow_resnet(block, layers, width, dilate):
  """torchvision's ResNet.__init__ with base width ``width`` instead of 64."""
  net = resnet.ResNet.__new__(resnet.ResNet)
  nn.Module.__init__(net)
  net._norm_layer = nn.BatchNorm2d  # pylint: disable=protected-access
  net.inplanes, net.dilation, net.groups, net.base_width = width, 1, 1, 64
  net.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
  net.bn1 = nn.BatchNorm2d(width)
  net.relu = nn.ReLU(inplace=True)
  net.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
  net.layer1 = net._make_layer(block, width, layers[0])  # pylint: disable=protected-access
  net.layer2 = net._make_layer(block, width * 2, layers[1], stride=2)
  net.layer3 = net._make_layer(block, width * 4, layers[2], stride=2, dilate=dilate[0])
  net.layer4 = net._make_layer(block, width * 8, layers[3], stride=2, dilate=dilate[1])
  for m in net.modules():
    if isinstance(m, nn.Conv2d):
      nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
  return net


def build(name):
  _, block, layers, width, dilate, aspp = NETWORKS[name]
  trunk = narrow_resnet(block, layers, width, dilate)
  if aspp is None:
    return nn.Sequential(
      *[
        getattr(trunk, n)
        for n in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
      ]
    ), trunk
  channels = width * 8 * block.expansion
  classifier = nn.Sequential(  # torchvision's DeepLabHead, 256 -> aspp
    ASPP(channels, [12, 24, 36], out_channels=aspp),
    nn.Conv2d(aspp, aspp, 3, padding=1, bias=False),
    nn.BatchNorm2d(aspp),
    nn.ReLU(),
    nn.Conv2d(aspp, 5, 1),
  )
  backbone = IntermediateLayerGetter(trunk, return_layers={"layer4": "out", "layer3": "aux"})
  net = DeepLabV3(backbone, classifier, FCNHead(channels // 2, 5))
  return net, net


def calibrate_batchnorm(module, generator):
  for m in module.modules():
    if isinstance(m, nn.BatchNorm2d):
      with torch.no_grad():
        m.weight.normal_(1, 0.2, generator=generator)
        m.bias.normal_(0, 0.2, generator=generator)
      m.reset_running_stats()
      m.momentum = None  # cumulative average
  module.train()
  with torch.no_grad():
    for _ in range(3):
      module(torch.randn(4, 3, 67, 91, generator=generator))
  module.eval()


def write_network(name, output):
  torch.manual_seed(0)
  net, holder = build(name)
  calibrate_batchnorm(net, torch.Generator().manual_seed(1))
  state = {k: v.detach().numpy() for k, v in holder.state_dict().items()}
  if NETWORKS[name][5] is None:
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
  np.savez_compressed(os.path.join(output, f"{name}.npz"), **state)
  image = np.random.default_rng(0).normal(size=(1, 37, 53, 3)).astype(np.float32)
  outputs = {}
  for suffix, dtype in (("", torch.float64), ("_torch_float32", torch.float32)):
    with torch.no_grad():
      out = net.to(dtype)(torch.from_numpy(image.transpose(0, 3, 1, 2)).to(dtype))
    out = (
      {"logits": out["out"], "aux_logits": out["aux"]} if isinstance(out, dict) else {"layer4": out}
    )
    outputs.update(
      {k + suffix: v.numpy().transpose(0, 2, 3, 1).astype(np.float32) for k, v in out.items()}
    )
  np.savez_compressed(os.path.join(output, f"{name}_io.npz"), image=image, **outputs)
  print(
    f"{name}: {sum(v.size for v in state.values()):,} numbers; outputs "
    f"{ {k: tuple(v.shape) for k, v in outputs.items()} }"
  )


def write_losses(output):
  rng = np.random.default_rng(1)
  logits = (rng.normal(size=(2, 9, 11, 5)) * 3).astype(np.float32)
  labels = rng.integers(0, 5, size=(2, 9, 11))
  labels[0, :3] = 255
  weights = rng.uniform(0.5, 2, size=5).astype(np.float32)
  t_logits, t_labels = (
    torch.from_numpy(logits.transpose(0, 3, 1, 2)).double(),
    torch.from_numpy(labels),
  )
  cases = []
  for kwargs in ({}, {"class_weights": weights.tolist()}, {"label_smoothing": 0.1}):
    value = torch.nn.functional.cross_entropy(
      t_logits,
      t_labels,
      ignore_index=255,
      weight=torch.tensor(kwargs["class_weights"]).double() if "class_weights" in kwargs else None,
      label_smoothing=kwargs.get("label_smoothing", 0.0),
    )
    cases.append({"loss": "cross_entropy", "kwargs": kwargs, "torch": float(value)})
  binary = (rng.normal(size=(2, 9, 11)) * 3).astype(np.float32)
  targets = rng.integers(0, 2, size=(2, 9, 11))
  value = torch.nn.functional.binary_cross_entropy_with_logits(
    torch.from_numpy(binary).double(),
    torch.from_numpy(targets).double(),
    pos_weight=torch.tensor(2.5).double(),
  )
  cases.append(
    {"loss": "binary_cross_entropy", "kwargs": {"pos_weight": 2.5}, "torch": float(value)}
  )
  data = {
    "logits": logits.tolist(),
    "labels": labels.tolist(),
    "binary": binary.tolist(),
    "targets": targets.tolist(),
    "cases": cases,
    "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__},
  }
  with open(os.path.join(output, "losses.json"), "w") as f:
    json.dump(data, f)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--output", default="tests/fixtures")
  args = parser.parse_args()
  os.makedirs(args.output, exist_ok=True)
  for name in NETWORKS:
    write_network(name, args.output)
  write_losses(args.output)
  print(
    f"Wrote {sorted(os.listdir(args.output))} to {args.output} "
    f"(torch {torch.__version__}, torchvision {torchvision.__version__})"
  )


if __name__ == "__main__":
  main()
