"""Weights by Hugging Face Hub name (`segjax.models.hub`), from a hub cache the test writes in
huggingface_hub's layout (``models--owner--name/{refs,snapshots}``) and read offline: the
transformers fixtures (checkpoint names and transformers 5's in-memory names) and a timm-style
ResNet, by `from_pretrained`, `from_transformers`, `from_torchvision` and
``config.model.pretrained``; pinned revisions; what a run records; errors that name the repository."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import ROOT
from segjax import models, runs, train
from segjax.models import hub

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
SEGFORMER = os.path.join(FIXTURES, "segformer_tiny")
MAIN, PINNED = "a" * 40, "b" * 40  # commits


def write_repo(cache, repo_id, commit, files, refs=("main",)):
  """One snapshot of a repository in a hub cache: ``files`` maps names to source paths or dicts
  (written as JSON); each of ``refs`` (branches, tags) points at ``commit``."""
  root = cache / f"models--{repo_id.replace('/', '--')}"
  snapshot = root / "snapshots" / commit
  snapshot.mkdir(parents=True)
  for name, content in files.items():
    if isinstance(content, dict):
      (snapshot / name).write_text(json.dumps(content))
    else:
      shutil.copy(content, snapshot / name)
  (root / "refs").mkdir(exist_ok=True)
  for ref in refs:
    (root / "refs" / ref).write_text(commit)


def write_fixture_repo(cache, repo_id, fixture):
  """The files of ``tests/fixtures/<fixture>/`` as ``repo_id`` at ``MAIN``; returns that folder."""
  directory = os.path.join(FIXTURES, fixture)
  write_repo(cache, repo_id, MAIN, {n: os.path.join(directory, n) for n in os.listdir(directory)})
  return directory


def sha256(path):
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
  """An offline hub cache holding nvidia/segformer-tiny (main: the checkpoint; tag "memory" at
  another commit: transformers 5's in-memory state dict) and timm/resnet18.tiny."""
  from huggingface_hub import constants  # pylint: disable=import-outside-toplevel

  cache = tmp_path / "hf" / "hub"
  cache.mkdir(parents=True)
  monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
  monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
  config = os.path.join(SEGFORMER, "config.json")
  write_repo(
    cache,
    "nvidia/segformer-tiny",
    MAIN,
    {"config.json": config, "model.safetensors": os.path.join(SEGFORMER, "model.safetensors")},
  )
  write_repo(
    cache,
    "nvidia/segformer-tiny",
    PINNED,
    {
      "config.json": config,
      "model.safetensors": os.path.join(FIXTURES, "segformer_tiny_state_dict.safetensors"),
    },
    refs=("memory",),
  )
  from test_pretrained import torchvision_resnet_state_dict  # pylint: disable=import-outside-toplevel

  state = torchvision_resnet_state_dict(18, np.random.default_rng(7))
  state = {k: np.asarray(v) for k, v in state.items() if "num_batches_tracked" not in k}
  weights = tmp_path / "resnet18.safetensors"
  save_file(state, str(weights))
  write_repo(
    cache,
    "timm/resnet18.tiny",
    MAIN,
    {
      "config.json": {"architecture": "resnet18", "num_classes": 1000},
      "model.safetensors": str(weights),
    },
  )
  return cache, state


def segformer_logits(model, variables):
  io = np.load(os.path.join(FIXTURES, "segformer_tiny_io.npz"))
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, io["image"])
  return np.asarray(out["logits_4x"]), io


@pytest.mark.slow
def test_from_pretrained_by_hub_name_equals_transformers_logits_at_main_and_a_pinned_revision(
  hub_cache,
):
  """main holds the checkpoint's key names, the tag "memory" (another commit) transformers 5's
  in-memory names (segformer.stages.N...): both give transformers' logits."""
  for name in (
    "hf-hub:nvidia/segformer-tiny",
    "hf-hub:nvidia/segformer-tiny@memory",
    f"hf-hub:nvidia/segformer-tiny@{PINNED}",
  ):
    model, variables = models.from_pretrained(name)
    assert model.num_heads == (1, 2, 3, 4)  # from the repository's config.json
    logits, io = segformer_logits(model, variables)
    torch_error = np.abs(io["logits_torch_float32"] - io["logits"]).max()
    np.testing.assert_allclose(logits, io["logits"], rtol=0, atol=max(5 * torch_error, 1e-6))
  weights = hub.resolve("hf-hub:nvidia/segformer-tiny@memory")
  assert weights.revision == PINNED and weights.repo_id == "nvidia/segformer-tiny"
  assert weights.sha256 == sha256(os.path.join(FIXTURES, "segformer_tiny_state_dict.safetensors"))
  assert hub.resolve("hf-hub:nvidia/segformer-tiny").revision == MAIN
  # The same name in from_transformers.
  model, variables = models.from_transformers("segformer", "hf-hub:nvidia/segformer-tiny@memory")
  np.testing.assert_allclose(segformer_logits(model, variables)[0], logits, rtol=0, atol=1e-6)


def test_timm_resnet_by_hub_name_in_from_pretrained_and_from_torchvision(hub_cache):
  _, state = hub_cache
  for model, variables in (
    models.from_pretrained("hf-hub:timm/resnet18.tiny"),
    models.from_torchvision("resnet18", "hf-hub:timm/resnet18.tiny"),
  ):
    assert model.depth == 18
    np.testing.assert_array_equal(
      variables["params"]["layer2"]["0"]["conv1"]["kernel"],
      state["layer2.0.conv1.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(variables["batch_stats"]["bn1"]["var"], state["bn1.running_var"])


@pytest.mark.slow
def test_config_model_pretrained_hub_name_loads_the_backbone_and_the_run_records_it(
  hub_cache, data_dir, tmp_path, monkeypatch
):
  from conftest import tiny_config  # pylint: disable=import-outside-toplevel

  _, state = hub_cache
  config = tiny_config(data_dir)
  config.model = ml_collections.ConfigDict(
    dict(
      name="deeplabv3plus",
      backbone="resnet18",
      aspp_features=8,
      decoder_features=8,
      low_level_features=8,
      dtype="float32",
      pretrained=f"hf-hub:timm/resnet18.tiny@{MAIN}",
    )
  )
  trainer = train.setup(config)
  backbone = jax.device_get(trainer.state.params["backbone"])
  np.testing.assert_array_equal(
    backbone["conv1"]["kernel"], state["conv1.weight"].transpose(2, 3, 1, 0)
  )
  snapshot = hub_cache[0] / "models--timm--resnet18.tiny" / "snapshots" / MAIN
  assert trainer.pretrained == {
    "name": f"hf-hub:timm/resnet18.tiny@{MAIN}",
    "repo_id": "timm/resnet18.tiny",
    "revision": MAIN,
    "files": ["model.safetensors"],
    "sha256": sha256(snapshot / "model.safetensors"),
  }
  runs.write(str(tmp_path), config, trainer.descriptor, pretrained=trainer.pretrained)
  with open(tmp_path / runs.PRETRAINED_FILE, encoding="utf-8") as f:
    assert json.load(f) == trainer.pretrained


def test_hub_errors_name_the_repository_revision_and_file(hub_cache):
  with pytest.raises(
    FileNotFoundError,
    match=r"hf-hub:nvidia/absent: revision main of "
    r"nvidia/absent is not in the hub cache .* "
    r"HF_HUB_OFFLINE=1",
  ):
    models.from_pretrained("hf-hub:nvidia/absent")
  with pytest.raises(FileNotFoundError, match="revision v9 of nvidia/segformer-tiny"):
    hub.resolve("hf-hub:nvidia/segformer-tiny@v9")
  with pytest.raises(ValueError, match=r"'hf-hub:segformer': the repository must be owner/name"):
    hub.resolve("hf-hub:segformer")
  write_repo(hub_cache[0], "someone/no-weights", MAIN, {"config.json": {"architecture": "x"}})
  with pytest.raises(
    FileNotFoundError, match="no-weights: the repository has none of model.safetensors"
  ):
    hub.resolve("hf-hub:someone/no-weights")
  write_repo(
    hub_cache[0],
    "someone/vit",
    MAIN,
    {
      "config.json": {"architecture": "vit_base_patch16_224"},
      "model.safetensors": os.path.join(SEGFORMER, "model.safetensors"),
    },
  )
  with pytest.raises(ValueError, match="someone/vit: config.json names 'vit_base_patch16_224'"):
    models.from_pretrained("hf-hub:someone/vit")


def test_the_environment_variables_choose_the_cache_and_offline_mode(hub_cache, tmp_path):
  """HF_HOME and HF_HUB_OFFLINE as a user sets them, read by huggingface_hub at start-up."""
  script = (
    "import json; from segjax.models import hub; "
    "print(json.dumps(hub.resolve('hf-hub:nvidia/segformer-tiny@memory').record()))"
  )
  env = {
    **os.environ,
    "HF_HOME": str(tmp_path / "hf"),
    "HF_HUB_OFFLINE": "1",
    "JAX_PLATFORMS": "cpu",
  }
  env.pop("HF_HUB_CACHE", None)
  out = subprocess.run(
    [sys.executable, "-c", script],
    env=env,
    cwd=ROOT,
    capture_output=True,
    text=True,
    check=True,
    timeout=300,
  )
  record = json.loads(out.stdout.strip().splitlines()[-1])
  assert record["revision"] == PINNED and record["files"] == ["model.safetensors"]


def test_mask2former_by_hub_name_equals_the_checkpoint_directory(hub_cache):
  directory = write_fixture_repo(hub_cache[0], "facebook/mask2former-tiny", "mask2former_tiny")
  _, by_name = models.from_pretrained("hf-hub:facebook/mask2former-tiny")
  _, by_path = models.from_transformers("mask2former", directory)
  jax.tree.map(np.testing.assert_array_equal, by_name, by_path)
  assert len(jax.tree.leaves(by_name)) > 100


def test_dinov2_by_hub_name_equals_the_checkpoint_directory(hub_cache):
  directory = write_fixture_repo(
    hub_cache[0], "facebook/dinov2-with-registers-tiny", "dinov2_registers_tiny"
  )
  model, by_name = models.from_pretrained("hf-hub:facebook/dinov2-with-registers-tiny")
  _, by_path = models.from_transformers("Dinov2WithRegistersModel", directory)
  jax.tree.map(np.testing.assert_array_equal, by_name, by_path)
  assert model.num_registers == 2
