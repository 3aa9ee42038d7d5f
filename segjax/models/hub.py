"""Weights by name from the Hugging Face Hub: ``"hf-hub:owner/repo"`` or ``"hf-hub:owner/repo@rev"``.

`resolve` finds a repository's ``config.json`` and weights (``model.safetensors``, a sharded
``model.safetensors.index.json``, or ``pytorch_model.bin``, which needs torch) through
``huggingface_hub``: its cache (``HF_HOME``, ``HF_HUB_CACHE``), ``HF_HUB_OFFLINE=1`` (the cache
only, no network), a pinned revision (a branch, tag or commit after ``@``). The result names the
commit the revision resolved to and the SHA-256 of the weights, which training records in the run
directory (``pretrained.json``).

What the weights are is read from ``config.json``: transformers' ``architectures`` (SegFormer,
Mask2Former) or timm's ``architecture`` (ResNets, whose keys are torchvision's), so
`segjax.models.from_pretrained` needs the name alone.
"""

from __future__ import annotations

import dataclasses
import json
import os

from segjax.files import sha256

PREFIX = "hf-hub:"
# Weight files in the order they are looked for.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@dataclasses.dataclass(frozen=True)
class HubWeights:
  """A resolved hub name: the repository, the commit its revision resolved to, the local files
  (``files``: one, or the shards of an index), their SHA-256 (of the concatenated shards), and the
  repository's ``config.json`` (``{}`` when it has none)."""

  name: str
  repo_id: str
  revision: str
  files: tuple[str, ...]
  sha256: str
  config: dict

  def record(self) -> dict:
    """What a run records of the weights it started from."""
    return {
      "name": self.name,
      "repo_id": self.repo_id,
      "revision": self.revision,
      "files": [os.path.basename(f) for f in self.files],
      "sha256": self.sha256,
    }


def is_hub_name(value) -> bool:
  return isinstance(value, str) and value.startswith(PREFIX)


def parse(name: str) -> tuple[str, str | None]:
  """``"hf-hub:owner/repo@revision"`` → ``("owner/repo", "revision")`` (revision None: main)."""
  if not is_hub_name(name):
    raise ValueError(f"{name!r} is not a hub name (hf-hub:owner/repo[@revision])")
  repo_id, _, revision = name[len(PREFIX) :].partition("@")
  if repo_id.count("/") != 1 or not all(repo_id.split("/")):
    raise ValueError(f"{name!r}: the repository must be owner/name (hf-hub:owner/repo[@revision])")
  return repo_id, revision or None


def _download(repo_id: str, filename: str, revision: str | None, name: str) -> str | None:
  """The local path of one file of the repository (from the cache, or downloaded into it), or
  None when the repository has no such file."""
  import huggingface_hub  # pylint: disable=import-outside-toplevel
  from huggingface_hub import errors  # pylint: disable=import-outside-toplevel
  from huggingface_hub import constants  # pylint: disable=import-outside-toplevel

  try:
    return huggingface_hub.hf_hub_download(repo_id, filename, revision=revision)
  except errors.LocalEntryNotFoundError as e:  # not cached, and offline or unreachable
    if _cached_snapshot(repo_id, revision) is not None:
      return None  # the cached snapshot of that revision has no such file
    offline = " with HF_HUB_OFFLINE=1" if constants.is_offline_mode() else ""
    raise FileNotFoundError(
      f"{name}: revision {revision or 'main'} of {repo_id} is not in the hub cache "
      f"({constants.HF_HUB_CACHE}) and cannot be downloaded{offline}"
    ) from e
  except errors.EntryNotFoundError:  # the repository has no such file
    return None
  except errors.RepositoryNotFoundError as e:
    raise FileNotFoundError(f"{name}: no repository {repo_id} on the hub") from e
  except errors.RevisionNotFoundError as e:
    raise FileNotFoundError(f"{name}: repository {repo_id} has no revision {revision}") from e


def _cached_snapshot(repo_id: str, revision: str | None) -> str | None:
  import huggingface_hub  # pylint: disable=import-outside-toplevel

  try:
    return huggingface_hub.snapshot_download(repo_id, revision=revision, local_files_only=True)
  except Exception:  # pylint: disable=broad-except
    return None


def _commit_of(path: str) -> str:
  """The commit of a cached file: its snapshot folder's name (``.../snapshots/<commit>/file``)."""
  parts = os.path.normpath(path).split(os.sep)
  return parts[parts.index("snapshots") + 1] if "snapshots" in parts else ""


def resolve(name: str) -> HubWeights:
  """The weights and config of hub name ``name`` (see the module docstring); errors name the
  repository, the revision and the file."""
  repo_id, revision = parse(name)
  config_path = _download(repo_id, "config.json", revision, name)
  config = {}
  if config_path:
    with open(config_path, encoding="utf-8") as f:
      config = json.load(f)
  for filename in WEIGHT_FILES:
    path = _download(repo_id, filename, revision, name)
    if path is None:
      continue
    files = (path,)
    if filename.endswith(".index.json"):
      with open(path, encoding="utf-8") as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
      files = tuple(_download(repo_id, shard, revision, name) for shard in shards)
      if None in files:
        raise FileNotFoundError(f"{name}: a shard listed in {filename} is missing")
    return HubWeights(name, repo_id, _commit_of(path), files, sha256(*files), config)
  raise FileNotFoundError(f"{name}: the repository has none of {', '.join(WEIGHT_FILES)}")


def read(name: str) -> tuple[dict, HubWeights]:
  """``(state dict of numpy arrays, HubWeights)`` of hub name ``name``."""
  from segjax.models import pretrained  # pylint: disable=import-outside-toplevel

  weights = resolve(name)
  state = {}
  for path in weights.files:
    state.update(pretrained.read_state_dict(path))
  return state, weights
