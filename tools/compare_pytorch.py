r"""segjax vs PyTorch speed, side by side on this machine, same architectures and parameter counts.

Needs torch and torchvision, which segjax does not depend on: use a scratch environment
(``pip install torch torchvision`` next to ``pip install -e .``).

  python tools/compare_pytorch.py --output=/tmp/segjax/vs_pytorch

Both frameworks run with their CPU defaults (PyTorch: its intra-op thread pool; XLA: its own, with
the convolution setting ``import segjax`` applies, segjax/xla_cpu.py; ``SEGJAX_XLA_CPU_DEFAULTS=1``
measures XLA's plain defaults), float32, random weights and inputs, eval mode for inference and
train mode for training:

* ``unet``: ``create("unet", num_classes=2, features=32, depth=4)`` against the same UNet written in
  PyTorch below (bias-free 3x3 conv + BN + ReLU twice per level, 2x2 max-pool, 2x2 stride-2
  transposed conv, concatenation, 1x1 head); 128x128, batch 8.
* ``deeplabv3``: ``create("deeplabv3", num_classes=21, backbone="resnet50")`` against torchvision's
  ``deeplabv3_resnet50(num_classes=21)`` (no aux head); 512x512, batch 1 for inference and 2 for
  training (PyTorch's BatchNorm refuses training on the 1x1 image-pooling branch of one image).
* ``conv``: one 3x3, 64->64 convolution on 8x128x128: forward, input gradient and weight gradient
  separately, in GFLOP/s (where the training gap comes from).

A train step is forward, cross-entropy, backward and an SGD-with-momentum update (in place in
PyTorch; a donated, jit-compiled step in JAX). Times are medians after warm-up.
"""

import json
import os
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402
from torch import nn as tnn  # noqa: E402
import torchvision  # noqa: E402

from segjax import losses  # noqa: E402
from segjax import models  # noqa: E402
from segjax.models import count_params  # noqa: E402

_OUTPUT = flags.DEFINE_string("output", None, "Directory for vs_pytorch.json and vs_pytorch.md.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed runs per measurement (median kept).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed runs first.")
_CASES = flags.DEFINE_list("cases", ["unet", "deeplabv3", "conv"], "What to compare.")


def median_time(fn, repeats=None) -> float:
  for _ in range(_WARMUP.value):
    fn()
  runs = []
  for _ in range(repeats or _REPEATS.value):
    start = time.perf_counter()
    fn()
    runs.append(time.perf_counter() - start)
  return statistics.median(runs)


class TorchDoubleConv(tnn.Sequential):
  def __init__(self, cin, cout):
    super().__init__(
      tnn.Conv2d(cin, cout, 3, padding=1, bias=False),
      tnn.BatchNorm2d(cout),
      tnn.ReLU(inplace=True),
      tnn.Conv2d(cout, cout, 3, padding=1, bias=False),
      tnn.BatchNorm2d(cout),
      tnn.ReLU(inplace=True),
    )


class TorchUNet(tnn.Module):
  """segjax.models.UNet in PyTorch (same layers, same parameter count)."""

  def __init__(self, num_classes, features=64, depth=4):
    super().__init__()
    widths = [features * 2**level for level in range(depth + 1)]
    self.down = tnn.ModuleList(
      TorchDoubleConv(cin, cout) for cin, cout in zip([3] + widths[: depth - 1], widths[:depth])
    )
    self.bottleneck = TorchDoubleConv(widths[depth - 1], widths[depth])
    self.upsample = tnn.ModuleList(
      tnn.ConvTranspose2d(widths[level + 1], widths[level], 2, 2) for level in range(depth)
    )
    self.up = tnn.ModuleList(
      TorchDoubleConv(2 * widths[level], widths[level]) for level in range(depth)
    )
    self.head = tnn.Conv2d(features, num_classes, 1)

  def forward(self, x):
    skips = []
    for block in self.down:
      x = block(x)
      skips.append(x)
      x = tnn.functional.max_pool2d(x, 2)
    x = self.bottleneck(x)
    for level in reversed(range(len(self.down))):
      x = self.upsample[level](x)
      skip = skips[level]
      dh, dw = skip.shape[2] - x.shape[2], skip.shape[3] - x.shape[3]
      x = tnn.functional.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])
      x = self.up[level](torch.cat([skip, x], 1))
    return self.head(x)


def _jax_side(model, image_size, infer_batch, train_batch, num_classes) -> dict:
  rng = np.random.default_rng(0)
  variables = jax.jit(lambda x: model.init(jax.random.key(0, impl="rbg"), x, train=False))(
    jnp.zeros((1, image_size, image_size, 3))
  )
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False)["logits"])
  x = jnp.asarray(rng.normal(size=(infer_batch, image_size, image_size, 3)), jnp.float32)
  infer = median_time(lambda: forward(variables, x).block_until_ready())
  tx = optax.sgd(1e-3, momentum=0.9)
  params, batch_stats = variables["params"], variables["batch_stats"]
  opt_state = tx.init(params)

  def step(params, batch_stats, opt_state, image, labels):
    def compute(params):
      out, updates = model.apply(
        {"params": params, "batch_stats": batch_stats},
        image,
        train=True,
        mutable=["batch_stats"],
        rngs={"dropout": jax.random.key(1)},
      )
      return losses.cross_entropy(out["logits"], labels), updates["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(compute, has_aux=True)(params)
    delta, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, delta), batch_stats, opt_state, loss

  step = jax.jit(step, donate_argnums=(0, 1, 2))
  image = jnp.asarray(rng.normal(size=(train_batch, image_size, image_size, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, num_classes, (train_batch, image_size, image_size)))
  carry = [params, batch_stats, opt_state]

  def run_step():
    out = step(*carry, image, labels)
    carry[:] = out[:3]
    jax.block_until_ready(out)

  return {
    "params": count_params(params),
    "infer_s": infer,
    "train_s": median_time(run_step, max(3, _REPEATS.value // 2)),
  }


def _torch_side(model, image_size, infer_batch, train_batch, num_classes) -> dict:
  gen = torch.Generator().manual_seed(0)
  model.eval()
  x = torch.randn(infer_batch, 3, image_size, image_size, generator=gen)

  def infer():
    with torch.inference_mode():
      out = model(x)
      return out["out"] if isinstance(out, dict) else out

  infer_s = median_time(infer)
  model.train()
  optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
  image = torch.randn(train_batch, 3, image_size, image_size, generator=gen)
  labels = torch.randint(0, num_classes, (train_batch, image_size, image_size), generator=gen)

  def step():
    optimizer.zero_grad(set_to_none=True)
    out = model(image)
    out = out["out"] if isinstance(out, dict) else out
    tnn.functional.cross_entropy(out, labels).backward()
    optimizer.step()

  return {
    "params": sum(p.numel() for p in model.parameters()),
    "infer_s": infer_s,
    "train_s": median_time(step, max(3, _REPEATS.value // 2)),
  }


def compare_model(name) -> dict:
  if name == "unet":
    spec = dict(image=128, infer_batch=8, train_batch=8, classes=2)
    ours = models.create("unet", num_classes=2, features=32, depth=4)
    theirs = TorchUNet(2, features=32, depth=4)
  else:
    spec = dict(image=512, infer_batch=1, train_batch=2, classes=21)
    ours = models.create("deeplabv3", num_classes=21, backbone="resnet50")
    theirs = torchvision.models.segmentation.deeplabv3_resnet50(
      weights=None, weights_backbone=None, num_classes=21, aux_loss=False
    )
  args = (spec["image"], spec["infer_batch"], spec["train_batch"], spec["classes"])
  jax_row, torch_row = _jax_side(ours, *args), _torch_side(theirs, *args)
  if jax_row["params"] != torch_row["params"]:
    raise AssertionError(
      f"{name}: {jax_row['params']} parameters in segjax, {torch_row['params']} in PyTorch"
    )
  return {
    "case": name,
    **spec,
    "params": jax_row["params"],
    "jax_infer_ms": 1e3 * jax_row["infer_s"],
    "torch_infer_ms": 1e3 * torch_row["infer_s"],
    "jax_train_ms": 1e3 * jax_row["train_s"],
    "torch_train_ms": 1e3 * torch_row["train_s"],
    "infer_speedup": torch_row["infer_s"] / jax_row["infer_s"],
    "train_speedup": torch_row["train_s"] / jax_row["train_s"],
  }


def compare_conv() -> dict:
  """3x3 64->64 conv on 8x128x128: forward, input-gradient, weight-gradient GFLOP/s."""
  b, h, w, c = 8, 128, 128, 64
  flops = 2 * b * h * w * c * c * 9
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(b, h, w, c)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, c, c)), jnp.float32)
  conv = lambda x, k: jax.lax.conv_general_dilated(
    x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  g = conv(x, k)
  fwd = jax.jit(conv)
  dx = jax.jit(lambda g: jax.vjp(conv, x, k)[1](g)[0])
  dk = jax.jit(lambda g: jax.vjp(lambda k: conv(x, k), k)[1](g)[0])
  row = {"case": "conv", "shape": f"{b}x{h}x{w}, 3x3 {c}->{c}"}
  for label, fn, arg in (
    ("forward", fwd, (x, k)),
    ("input_grad", dx, (g,)),
    ("weight_grad", dk, (g,)),
  ):
    row[f"jax_{label}_gflops"] = (
      flops / median_time(lambda fn=fn, arg=arg: fn(*arg).block_until_ready()) / 1e9
    )
  tx = torch.randn(b, c, h, w, requires_grad=True)
  tk = torch.randn(c, c, 3, 3, requires_grad=True)
  tg = torch.randn(b, c, h, w)
  tconv = lambda: tnn.functional.conv2d(tx, tk, padding=1)
  with torch.no_grad():
    row["torch_forward_gflops"] = flops / median_time(tconv) / 1e9
  row["torch_input_grad_gflops"] = (
    flops / median_time(lambda: torch.nn.grad.conv2d_input(tx.shape, tk, tg, padding=1)) / 1e9
  )
  row["torch_weight_grad_gflops"] = (
    flops / median_time(lambda: torch.nn.grad.conv2d_weight(tx, tk.shape, tg, padding=1)) / 1e9
  )
  return row


def markdown(rows) -> str:
  lines = [
    "| model | input | params | inference ms segjax / PyTorch | speed-up | "
    "train step ms segjax / PyTorch | speed-up |",
    "|---|---|---:|---:|---:|---:|---:|",
  ]
  for r in rows:
    if r["case"] == "conv":
      continue
    lines.append(
      f"| {r['case']} | {r['image']}², batch {r['infer_batch']} (train "
      f"{r['train_batch']}) | {r['params']:,} | {r['jax_infer_ms']:.0f} / "
      f"{r['torch_infer_ms']:.0f} | {r['infer_speedup']:.2f}× | "
      f"{r['jax_train_ms']:.0f} / {r['torch_train_ms']:.0f} | "
      f"{r['train_speedup']:.2f}× |"
    )
  for r in rows:
    if r["case"] == "conv":
      lines += [
        "",
        f"Convolution {r['shape']} (GFLOP/s, segjax/XLA vs PyTorch):",
        "",
        "| pass | XLA | PyTorch |",
        "|---|---:|---:|",
      ]
      lines += [
        f"| {label} | {r[f'jax_{label}_gflops']:.0f} | {r[f'torch_{label}_gflops']:.0f} |"
        for label in ("forward", "input_grad", "weight_grad")
      ]
  return "\n".join(lines)


def main(argv):
  del argv
  rows = [compare_conv() if case == "conv" else compare_model(case) for case in _CASES.value]
  info = {
    "torch": torch.__version__,
    "torchvision": torchvision.__version__,
    "torch_threads": torch.get_num_threads(),
    "jax": jax.__version__,
    "cpu_count": os.cpu_count(),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }
  table = markdown(rows)
  print(json.dumps(info))
  print(table)
  if _OUTPUT.value:
    os.makedirs(_OUTPUT.value, exist_ok=True)
    with open(os.path.join(_OUTPUT.value, "vs_pytorch.json"), "w") as f:
      json.dump({"machine": info, "rows": rows}, f, indent=1)
    with open(os.path.join(_OUTPUT.value, "vs_pytorch.md"), "w") as f:
      f.write(table + "\n")


if __name__ == "__main__":
  app.run(main)
