"""The torchvision weight converter, without torch or downloads: state dicts the tests build with
torchvision's key names and shapes (written out here from torchvision's architecture)."""

import importlib.util

import numpy as np
import pytest

from segjax.models import pretrained


def torchvision_resnet_state_dict(depth, rng, *, prefix="", fc=True):
  """Key names and shapes of torchvision.models.resnet{depth}().state_dict()."""
  kind, blocks = {18: ("basic", (2, 2, 2, 2)), 50: ("bottleneck", (3, 4, 6, 3))}[depth]
  sd = {}

  def conv(name, out, inp, k):
    sd[f"{prefix}{name}.weight"] = rng.normal(size=(out, inp, k, k)).astype(np.float32)

  def bn(name, n):
    sd[f"{prefix}{name}.weight"] = rng.normal(size=n).astype(np.float32)
    sd[f"{prefix}{name}.bias"] = rng.normal(size=n).astype(np.float32)
    sd[f"{prefix}{name}.running_mean"] = rng.normal(size=n).astype(np.float32)
    sd[f"{prefix}{name}.running_var"] = rng.uniform(0.5, 2, size=n).astype(np.float32)
    sd[f"{prefix}{name}.num_batches_tracked"] = np.array(7)

  conv("conv1", 64, 3, 7)
  bn("bn1", 64)
  inplanes, expansion = 64, 1 if kind == "basic" else 4
  for layer, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
    for b in range(count):
      p = f"layer{layer}.{b}"
      if kind == "basic":
        conv(f"{p}.conv1", planes, inplanes, 3)
        bn(f"{p}.bn1", planes)
        conv(f"{p}.conv2", planes, planes, 3)
        bn(f"{p}.bn2", planes)
      else:
        conv(f"{p}.conv1", planes, inplanes, 1)
        bn(f"{p}.bn1", planes)
        conv(f"{p}.conv2", planes, planes, 3)
        bn(f"{p}.bn2", planes)
        conv(f"{p}.conv3", planes * 4, planes, 1)
        bn(f"{p}.bn3", planes * 4)
      if b == 0 and (layer > 1 or inplanes != planes * expansion):
        conv(f"{p}.downsample.0", planes * expansion, inplanes, 1)
        bn(f"{p}.downsample.1", planes * expansion)
      inplanes = planes * expansion
  if fc:
    sd[f"{prefix}fc.weight"] = rng.normal(size=(1000, inplanes)).astype(np.float32)
    sd[f"{prefix}fc.bias"] = rng.normal(size=1000).astype(np.float32)
  return sd


def torchvision_deeplab_head(rng, num_classes, aux):
  """Keys of torchvision's DeepLabHead(2048, C) (and FCNHead(1024, C))."""
  sd = {}

  def conv(name, out, inp, k, bias=False):
    sd[f"{name}.weight"] = rng.normal(size=(out, inp, k, k)).astype(np.float32)
    if bias:
      sd[f"{name}.bias"] = rng.normal(size=out).astype(np.float32)

  def bn(name, n):
    for leaf in ("weight", "bias", "running_mean"):
      sd[f"{name}.{leaf}"] = rng.normal(size=n).astype(np.float32)
    sd[f"{name}.running_var"] = rng.uniform(0.5, 2, size=n).astype(np.float32)
    sd[f"{name}.num_batches_tracked"] = np.array(3)

  conv("classifier.0.convs.0.0", 256, 2048, 1)
  bn("classifier.0.convs.0.1", 256)
  for i in (1, 2, 3):
    conv(f"classifier.0.convs.{i}.0", 256, 2048, 3)
    bn(f"classifier.0.convs.{i}.1", 256)
  conv("classifier.0.convs.4.1", 256, 2048, 1)
  bn("classifier.0.convs.4.2", 256)
  conv("classifier.0.project.0", 256, 1280, 1)
  bn("classifier.0.project.1", 256)
  conv("classifier.1", 256, 256, 3)
  bn("classifier.2", 256)
  conv("classifier.4", num_classes, 256, 1, bias=True)
  if aux:
    conv("aux_classifier.0", 256, 1024, 3)
    bn("aux_classifier.1", 256)
    conv("aux_classifier.4", num_classes, 256, 1, bias=True)
  return sd


def test_resnet18_converts_every_tensor_by_name():
  sd = torchvision_resnet_state_dict(18, np.random.default_rng(0))
  model, variables = pretrained.from_torchvision("resnet18", sd)
  params, stats = variables["params"], variables["batch_stats"]
  np.testing.assert_array_equal(
    params["layer2"]["0"]["conv1"]["kernel"], sd["layer2.0.conv1.weight"].transpose(2, 3, 1, 0)
  )
  np.testing.assert_array_equal(
    params["layer3"]["0"]["downsample"]["1"]["scale"], sd["layer3.0.downsample.1.weight"]
  )
  # A stage's repeated blocks are stacked (nn.scan): layer4.1 is entry 0 of layer4/blocks.
  np.testing.assert_array_equal(
    stats["layer4"]["blocks"]["block"]["bn2"]["var"][0], sd["layer4.1.bn2.running_var"]
  )
  # Round trip: every variable back under its torchvision key gives the file (without fc).
  back = pretrained.to_state_dict(variables)
  expected = {k: v for k, v in sd.items() if not k.startswith("fc.") and "num_batches" not in k}
  assert back.keys() == expected.keys()
  for k in expected:
    np.testing.assert_array_equal(back[k], expected[k])


@pytest.mark.parametrize("aux", [False, True])
def test_deeplabv3_resnet50_converts_with_and_without_aux(aux, tmp_path):
  rng = np.random.default_rng(1)
  sd = torchvision_resnet_state_dict(50, rng, prefix="backbone.", fc=False)
  sd.update(torchvision_deeplab_head(rng, 21, aux))
  path = str(tmp_path / "deeplab.npz")
  np.savez(path, **sd)
  model, variables = pretrained.from_torchvision("deeplabv3_resnet50", path)
  assert model.aux_head == aux and model.num_classes == 21 and model.output_stride == 8
  params = variables["params"]
  np.testing.assert_array_equal(
    params["classifier"]["0"]["convs_4"]["1"]["kernel"],
    sd["classifier.0.convs.4.1.weight"].transpose(2, 3, 1, 0),
  )
  np.testing.assert_array_equal(params["classifier"]["4"]["bias"], sd["classifier.4.bias"])


def write_safetensors(path, tensors):
  import json

  header, blobs, offset = {}, [], 0
  for k, v in tensors.items():
    raw = np.ascontiguousarray(v).tobytes()
    header[k] = {
      "dtype": {"float32": "F32", "int64": "I64"}[str(v.dtype)],
      "shape": list(v.shape),
      "data_offsets": [offset, offset + len(raw)],
    }
    blobs.append(raw)
    offset += len(raw)
  text = json.dumps(header).encode()
  with open(path, "wb") as f:
    f.write(len(text).to_bytes(8, "little") + text + b"".join(blobs))


def test_safetensors_and_npz_read_the_same(tmp_path):
  sd = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([5], np.int64)}
  write_safetensors(tmp_path / "w.safetensors", sd)
  np.savez(tmp_path / "w.npz", **sd)
  for name in ("w.safetensors", "w.npz"):
    got = pretrained.read_state_dict(str(tmp_path / name))
    assert got.keys() == sd.keys()
    for k in sd:
      np.testing.assert_array_equal(got[k], sd[k])


def test_clear_errors_for_missing_extra_and_misshapen_tensors(tmp_path):
  sd = torchvision_resnet_state_dict(18, np.random.default_rng(2), fc=False)
  broken = dict(sd)
  del broken["layer1.0.conv1.weight"]
  broken["layer9.0.conv1.weight"] = np.zeros((1,), np.float32)
  broken["layer2.0.bn1.bias"] = np.zeros((3,), np.float32)
  with pytest.raises(ValueError) as error:
    pretrained.from_torchvision("resnet18", broken)
  message = str(error.value)
  assert "1 missing: layer1.0.conv1.weight" in message
  assert "1 left over: layer9.0.conv1.weight" in message
  assert "layer2.0.bn1.bias: file (3,) vs model (128,)" in message
  (tmp_path / "w.pth").write_bytes(b"x")
  if importlib.util.find_spec("torch") is None:
    with pytest.raises(ImportError, match="needs PyTorch"):
      pretrained.read_state_dict(str(tmp_path / "w.pth"))
  with pytest.raises(FileNotFoundError, match="nowhere.npz"):
    pretrained.read_state_dict(str(tmp_path / "nowhere.npz"))
