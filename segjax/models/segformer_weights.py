"""transformers' SegFormer checkpoints ↔ `segjax.models.segformer.SegFormer`'s variables: key
names (`hf_key`; transformers 5's in-memory names too, `checkpoint_names`) and the model's sizes
read from the tensors (`sizes_from_state_dict`); used by `segjax.models.from_transformers`."""

from __future__ import annotations

import re

from segjax.models.pretrained import LEAVES


_HF_NAMES = (
  (r"^(patch_embeddings)_(\d+)$", r"\1.\2"),
  (r"^block_(\d+)_(\d+)$", r"block.\1.\2"),
  (r"^stage_norm_(\d+)$", r"layer_norm.\1"),
  (r"^linear_c_(\d+)_proj$", r"linear_c.\1.proj"),
)


def hf_key(path: tuple[str, ...]) -> str:
  """The transformers key of a Flax variable path ``(collection, *modules, leaf)``."""
  collection, *modules, leaf = path
  if (collection, leaf) not in LEAVES:
    raise KeyError(f"no transformers name for variable {'/'.join(path)}")
  names = []
  for module in modules:
    for pattern, replacement in _HF_NAMES:
      module = re.sub(pattern, replacement, module)
    names.append(module)
  return ".".join(names + [LEAVES[(collection, leaf)]])


# transformers 5 renames SegFormer's modules in memory (its conversion_mapping.py, "SegformerModel"
# and "SegformerForSemanticSegmentation"), while checkpoints keep the names above: a model's
# state_dict() says segformer.stages.0.blocks.1.attention.q_proj.weight for the checkpoint's
# segformer.encoder.block.0.1.attention.self.query.weight. In the inverse order of its list.
_IN_MEMORY_NAMES = (
  (r"\.stages\.(\d+)\.patch_embeddings\.", r".encoder.patch_embeddings.\1."),
  (r"\.stages\.(\d+)\.blocks\.", r".encoder.block.\1."),
  (r"\.stages\.(\d+)\.layer_norm\.", r".encoder.layer_norm.\1."),
  (r"\.layernorm_before\.", ".layer_norm_1."),
  (r"\.layernorm_after\.", ".layer_norm_2."),
  (r"\.mlp\.fc1\.", ".mlp.dense1."),
  (r"\.mlp\.fc2\.", ".mlp.dense2."),
  (r"\.attention\.o_proj\.", ".attention.output.dense."),
  (r"\.attention\.sequence_reduction\.layer_norm\.", ".attention.self.layer_norm."),
  (r"\.attention\.sequence_reduction\.sequence_reduction\.", ".attention.self.sr."),
  (r"\.attention\.q_proj\.", ".attention.self.query."),
  (r"\.attention\.k_proj\.", ".attention.self.key."),
  (r"\.attention\.v_proj\.", ".attention.self.value."),
  (r"^decode_head\.linear_projections\.", "decode_head.linear_c."),
)


def checkpoint_names(state: dict) -> dict:
  """``state`` with transformers 5's in-memory key names (``segformer.stages.N…``,
  ``decode_head.linear_projections``) mapped to the checkpoint names `hf_key` gives; keys already
  in checkpoint form are kept."""
  out = {}
  for key, value in state.items():
    if key.startswith("segformer.stages.") or key.startswith("decode_head.linear_projections."):
      for pattern, replacement in _IN_MEMORY_NAMES:
        key = re.sub(pattern, replacement, key)
    out[key] = value
  return out


def sizes_from_state_dict(state: dict, hf_config: dict | None = None) -> dict:
  """`SegFormer` arguments of a transformers state dict: widths, depths, reduction ratios, decoder
  width and classes from the tensors' shapes; heads from ``hf_config`` (``num_attention_heads``)."""
  prefix = "segformer.encoder."
  stages = sorted(
    {int(k.split(".")[3]) for k in state if k.startswith(prefix + "patch_embeddings.")}
  )
  if not stages or "decode_head.classifier.weight" not in state:
    raise ValueError(
      "not a SegformerForSemanticSegmentation state dict: no "
      f"{prefix}patch_embeddings.* or decode_head.classifier.weight"
    )
  hidden, depths, ratios = [], [], []
  for i in stages:
    hidden.append(int(state[f"{prefix}patch_embeddings.{i}.proj.weight"].shape[0]))
    depths.append(
      1 + max(int(k.split(".")[4]) for k in state if k.startswith(f"{prefix}block.{i}."))
    )
    sr = state.get(f"{prefix}block.{i}.0.attention.self.sr.weight")
    ratios.append(1 if sr is None else int(sr.shape[-1]))
  heads = tuple((hf_config or {}).get("num_attention_heads", (1, 2, 5, 8)))
  return dict(
    num_classes=int(state["decode_head.classifier.weight"].shape[0]),
    hidden_sizes=tuple(hidden),
    depths=tuple(depths),
    sr_ratios=tuple(ratios),
    num_heads=heads,
    decoder_hidden_size=int(state["decode_head.linear_c.0.proj.weight"].shape[0]),
  )
