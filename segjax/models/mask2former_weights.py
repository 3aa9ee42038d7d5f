"""transformers' Mask2Former checkpoints (ResNet backbone) ↔
`segjax.models.mask2former.Mask2Former`'s variables: key names (`hf_key`), the fused attention
projections split (`split_in_proj`) and the model's sizes read from the tensors
(`sizes_from_state_dict`); used by `segjax.models.from_transformers`."""

from __future__ import annotations

import re

from segjax.models.mask2former import LEVELS
from segjax.models.pretrained import LEAVES


# Flax module names → transformers' (``Sequential`` children, list indices).
_HF_NAMES = (
  (r"^encoder_layers_(\d+)$", r"encoder.layers.\1"),
  (r"^layers_(\d+)$", r"layers.\1"),
  (r"^input_projections_(\d+)$", r"input_projections.\1"),
  (r"^mask_embedder_(\d+)$", r"mask_embedder.\1.0"),
)
_BACKBONE = "model.pixel_level_module.encoder."


def _sequential(module: str) -> str:
  match = re.match(r"^(input_projections|adapter|layer)_(\d+)_(conv|norm)$", module)
  if not match:
    return module
  base, index, part = match.groups()
  child = "0" if part == "conv" else "1"
  return f"{base}.{index}.{child}" if base == "input_projections" else f"{base}_{index}.{child}"


def _backbone_key(modules: list[str]) -> str:
  """transformers' ``ResNetBackbone`` names of segjax's torchvision-named ResNet modules."""
  if modules[0] in ("conv1", "bn1"):
    part = "convolution" if modules[0] == "conv1" else "normalization"
    return f"embedder.embedder.{part}"
  stage, block, layer = int(modules[0][len("layer") :]) - 1, modules[1], modules[2]
  prefix = f"encoder.stages.{stage}.layers.{block}."
  if layer == "downsample":
    return prefix + ("shortcut.convolution" if modules[3] == "0" else "shortcut.normalization")
  index = int(layer[-1]) - 1
  return (
    prefix + f"layer.{index}." + ("convolution" if layer.startswith("conv") else "normalization")
  )


def hf_key(path: tuple[str, ...]) -> str:
  """The transformers key of a Flax variable path ``(collection, *modules, leaf)``."""
  collection, *modules, leaf = path
  if modules[:3] == ["model", "pixel_level_module", "encoder"]:
    if (collection, leaf) not in LEAVES:
      raise KeyError(f"no transformers name for variable {'/'.join(path)}")
    return _BACKBONE + _backbone_key(modules[3:]) + "." + LEAVES[(collection, leaf)]
  if leaf == "level_embed" and collection == "params":  # a bare parameter of the pixel decoder
    return ".".join(modules + [leaf])
  if (collection, leaf) not in LEAVES:
    raise KeyError(f"no transformers name for variable {'/'.join(path)}")
  if modules[:2] == ["model", "transformer_module"] and (
    modules[2] in ("layernorm", "mask_predictor") or modules[2].startswith("layers_")
  ):
    modules = modules[:2] + ["decoder"] + modules[2:]  # transformers' decoder submodule
  names = []
  for module in modules:
    module = _sequential(module)
    for pattern, replacement in _HF_NAMES:
      module = re.sub(pattern, replacement, module)
    names.append(module)
  return ".".join(names + [LEAVES[(collection, leaf)]])


def split_in_proj(state: dict) -> dict:
  """``cross_attn.in_proj_weight``/``in_proj_bias`` (PyTorch's ``MultiheadAttention``) as
  ``q_proj``/``k_proj``/``v_proj`` tensors, the layout of the other attention layers."""
  out = {}
  for key, value in state.items():
    match = re.match(r"^(.*)\.in_proj_(weight|bias)$", key)
    if not match:
      out[key] = value
      continue
    third = value.shape[0] // 3
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
      out[f"{match.group(1)}.{name}.{match.group(2)}"] = value[i * third : (i + 1) * third]
  return out


def sizes_from_state_dict(state: dict, hf_config: dict | None = None) -> dict:
  """`Mask2Former` arguments of a transformers state dict (after `split_in_proj`): widths, layer
  counts, queries, classes, heads and the ResNet's layout from the tensors' shapes (heads from
  ``hf_config``'s ``num_attention_heads`` when given)."""
  decoder = "model.pixel_level_module.decoder."
  transformer = "model.transformer_module."
  if "class_predictor.weight" not in state or decoder + "mask_projection.weight" not in state:
    raise ValueError(
      "not a Mask2FormerForUniversalSegmentation state dict: no "
      "class_predictor.weight or " + decoder + "mask_projection.weight"
    )
  stem = _BACKBONE + "embedder.embedder.convolution.weight"
  if stem not in state:
    raise ValueError(
      f"the Mask2Former checkpoint's backbone is not a ResNet (no {stem}); segjax "
      "loads Mask2Former with ResNet backbones"
    )
  width = int(state[stem].shape[0])
  stages = [
    [int(k.split(".")[7]) for k in state if k.startswith(f"{_BACKBONE}encoder.stages.{s}.layers.")]
    for s in range(4)
  ]
  blocks = tuple(1 + max(s) for s in stages)
  bottleneck = any(".layer.2.convolution" in k for k in state if k.startswith(_BACKBONE))
  backbone = "resnet50" if bottleneck else "resnet18"  # the block kind; ``blocks`` the counts
  # heads × 3 levels × 4 points of the deformable attention's weights
  offsets = state.get(decoder + "encoder.layers.0.self_attn.attention_weights.weight")
  heads = int((hf_config or {}).get("num_attention_heads", 0)) or (
    int(offsets.shape[0]) // (LEVELS * 4) if offsets is not None else 8
  )
  return dict(
    num_classes=int(state["class_predictor.weight"].shape[0]) - 1,
    backbone=backbone,
    width=width,
    blocks=blocks,
    feature_size=int(state[decoder + "mask_projection.weight"].shape[1]),
    mask_feature_size=int(state[decoder + "mask_projection.weight"].shape[0]),
    hidden_dim=int(state[transformer + "queries_features.weight"].shape[1]),
    num_queries=int(state[transformer + "queries_features.weight"].shape[0]),
    num_heads=heads,
    encoder_layers=1
    + max(int(k.split(".")[5]) for k in state if k.startswith(decoder + "encoder.layers.")),
    encoder_ffn=int(state[decoder + "encoder.layers.0.fc1.weight"].shape[0]),
    decoder_layers=1
    + max(int(k.split(".")[4]) for k in state if k.startswith(transformer + "decoder.layers.")),
    decoder_ffn=int(state[transformer + "decoder.layers.0.fc1.weight"].shape[0]),
    common_stride=4 if any(k.startswith(decoder + "adapter_1.") for k in state) else 8,
  )
