r"""Writes the Hugging Face transformers fixtures that tests/test_transformers_reference.py compares
segjax with.

Needs torch and transformers only (not segjax, not JAX); run it in a scratch environment:

  python3 -m venv /tmp/hfenv && /tmp/hfenv/bin/pip install torch==2.14.1 transformers safetensors
  /tmp/hfenv/bin/python tools/transformers_reference.py --output=tests/fixtures

Writes ``segformer_tiny/`` (``config.json`` and ``model.safetensors`` of a
``SegformerForSemanticSegmentation`` at reduced widths, its weights random with unit gain, its
BatchNorm statistics random) and ``segformer_tiny_io.npz`` (``image`` NHWC and the model's stride-4
``logits`` NHWC in eval mode, computed in float64 from the float32 weights, and, as
``logits_torch_float32``, in float32), and ``segformer_sizes.json``: the parameter counts of
transformers' MiT-B0 and MiT-B5 SegFormers at 150 classes (ADE20K).

Writes ``mask2former_tiny/`` (a ``Mask2FormerForUniversalSegmentation`` on a small ResNet
backbone, reduced widths, its weights random with unit gain, its BatchNorm statistics random) and
``mask2former_tiny_io.npz``: ``image`` NHWC, ``class_logits`` ``[B,Q,K+1]`` and ``mask_logits``
``[B,Q,H/4,W/4]`` of every decoder prediction stacked (the auxiliary ones first) in float64 from the
float32 weights, and the last prediction in float32 (``*_torch_float32``); and
``mask2former_sizes.json``: the parameter count of transformers' Mask2Former with a ResNet-50
backbone at 133 classes (COCO panoptic).

Writes ``sam_tiny/`` (a ``SamModel``: a 4-block ViT of width 32 on 64x64 images, 8x8 patches,
windows of 3 (the 8x8 grid padded to 9x9) and global attention in blocks 1 and 3, a 16-wide
prompt encoder and mask decoder; weights random with unit gain) and ``sam_tiny_io.npz``: the image
NHWC, the image embeddings NHWC, and for each prompt case (points with labels 1/0/-1/-10, boxes,
points + boxes, points + a low-resolution mask, a single mask output) its inputs, ``pred_masks``
and ``iou_scores`` in float64 from the float32 weights (and torch's float32 ones:
``*_torch_float32``); and
``sam_sizes.json``: the parameter counts of transformers' SAM ViT-B, ViT-L and ViT-H.

Writes ``dinov2_tiny/``, ``dinov2_registers_tiny/``, ``dinov2_tiny_io.npz`` and
``dinov2_sizes.json`` (`dinov2`).

Writes ``segformer_tiny_state_dict.safetensors``: the in-memory ``state_dict()`` of
``segformer_tiny/`` (transformers 5's module names; ``--only=state_dict`` writes this alone from
the existing ``segformer_tiny/``).
"""

import argparse
import json
import os

import numpy as np
import torch
import transformers
from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, ResNetConfig
from transformers import Dinov2Config, Dinov2Model
from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel
from transformers import SamConfig, SamModel
from transformers import SegformerConfig, SegformerForSemanticSegmentation

TINY = dict(
  num_channels=3,
  num_encoder_blocks=4,
  depths=[1, 2, 1, 1],
  sr_ratios=[8, 4, 2, 1],
  hidden_sizes=[8, 16, 24, 32],
  num_attention_heads=[1, 2, 3, 4],
  decoder_hidden_size=16,
  num_labels=5,
)
# The MiT variants of the paper (transformers' nvidia/mit-b0 ... mit-b5 configs).
VARIANTS = {
  "b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2], decoder_hidden_size=256),
  "b5": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 6, 40, 3], decoder_hidden_size=768),
}

# Mask2Former: ResNet (basic blocks, width 4, blocks 2/1/1/1), 32 pixel-decoder channels (the
# GroupNorm minimum), 16 decoder channels (so the decoder's input projections exist), 2 deformable
# encoder layers, 3 decoder layers, 4 heads, 6 queries, 5 classes.
M2F_BACKBONE = dict(
  num_channels=3,
  embedding_size=4,
  hidden_sizes=[4, 8, 16, 32],
  depths=[2, 1, 1, 1],
  layer_type="basic",
  out_features=["stage1", "stage2", "stage3", "stage4"],
)
M2F_TINY = dict(
  feature_size=32,
  mask_feature_size=16,
  hidden_dim=16,
  encoder_feedforward_dim=32,
  dim_feedforward=32,
  encoder_layers=2,
  decoder_layers=4,
  num_attention_heads=4,
  num_queries=6,
  num_labels=5,
  output_auxiliary_logits=True,
)


def unit_gain_(model, small=()):
  """Weights of unit gain (transformers' std 0.02 leaves outputs near 0), norm scales in [0.5, 1.5],
  biases N(0, 0.1), BatchNorm statistics random; parameters named in ``small`` scaled by 0.2."""
  with torch.no_grad():
    for name, p in model.named_parameters():
      if p.dim() > 1:
        p.normal_(0.0, float(p[0].numel()) ** -0.5)
      elif name.endswith("weight"):
        p.uniform_(0.5, 1.5)
      else:
        p.normal_(0.0, 0.1)
      if any(s in name for s in small):
        p.mul_(0.2)
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.running_mean.normal_(0.0, 0.2)
        module.running_var.uniform_(0.5, 2.0)


def mask2former(output):
  torch.manual_seed(0)
  config = Mask2FormerConfig(backbone_config=ResNetConfig(**M2F_BACKBONE), **M2F_TINY)
  model = Mask2FormerForUniversalSegmentation(config).eval()
  unit_gain_(model, small=("sampling_offsets",))
  model.save_pretrained(os.path.join(output, "mask2former_tiny"), safe_serialization=True)
  image = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
  with torch.no_grad():
    out32 = model(pixel_values=image)
    out64 = model.double()(pixel_values=image.double())
  stack = lambda out, key: np.stack(
    [a[key].numpy() for a in out.auxiliary_logits] + [getattr(out, key).numpy()]
  )
  np.savez_compressed(
    os.path.join(output, "mask2former_tiny_io.npz"),
    image=image.permute(0, 2, 3, 1).numpy().astype(np.float32),
    class_logits=stack(out64, "class_queries_logits").astype(np.float32),
    mask_logits=stack(out64, "masks_queries_logits").astype(np.float32),
    class_logits_torch_float32=out32.class_queries_logits.numpy(),
    mask_logits_torch_float32=out32.masks_queries_logits.numpy(),
  )
  r50 = ResNetConfig(
    embedding_size=64,
    hidden_sizes=[256, 512, 1024, 2048],
    depths=[3, 4, 6, 3],
    layer_type="bottleneck",
    out_features=["stage1", "stage2", "stage3", "stage4"],
  )
  big = Mask2FormerForUniversalSegmentation(Mask2FormerConfig(backbone_config=r50, num_labels=133))
  sizes = {
    "transformers": transformers.__version__,
    "torch": torch.__version__,
    "resnet50_coco": sum(p.numel() for p in big.parameters()),
  }
  with open(os.path.join(output, "mask2former_sizes.json"), "w", encoding="utf-8") as f:
    json.dump(sizes, f, indent=2)


SAM_TINY = dict(
  vision_config=dict(
    hidden_size=32,
    output_channels=16,
    num_hidden_layers=4,
    num_attention_heads=2,
    image_size=64,
    patch_size=8,
    window_size=3,
    global_attn_indexes=[1, 3],
    num_pos_feats=8,
  ),
  prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=8, mask_input_channels=8),
  mask_decoder_config=dict(
    hidden_size=16, mlp_dim=32, num_attention_heads=2, iou_head_hidden_dim=16
  ),
)
SAM_VARIANTS = {  # facebook/sam-vit-base, -large, -huge
  "vit_b": dict(
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, global_attn_indexes=[2, 5, 8, 11]
  ),
  "vit_l": dict(
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    global_attn_indexes=[5, 11, 17, 23],
  ),
  "vit_h": dict(
    hidden_size=1280,
    num_hidden_layers=32,
    num_attention_heads=16,
    global_attn_indexes=[7, 15, 23, 31],
  ),
}


def sam(output):
  torch.manual_seed(0)
  model = SamModel(SamConfig(**SAM_TINY)).eval()
  unit_gain_(model)
  model.save_pretrained(os.path.join(output, "sam_tiny"), safe_serialization=True)
  g = torch.Generator().manual_seed(3)
  image = torch.randn(2, 3, 64, 64, generator=g)
  points = torch.rand(2, 2, 3, 2, generator=g) * 64
  labels = torch.tensor([[[1, 0, 1], [1, -10, -10]], [[0, 1, -1], [1, 1, 0]]])
  boxes = torch.tensor(
    [
      [[10.0, 20.0, 90.0, 100.0], [0.0, 0.0, 60.0, 40.0]],
      [[30.0, 5.0, 127.0, 70.0], [50.0, 50.0, 80.0, 120.0]],
    ]
  )
  masks = torch.randn(2, 1, 32, 32, generator=g)  # [B, 1, 4h, 4w]
  cases = {
    "points": dict(input_points=points, input_labels=labels),
    "boxes": dict(input_boxes=boxes),
    "points_boxes": dict(input_points=points, input_labels=labels, input_boxes=boxes),
    "points_mask": dict(input_points=points, input_labels=labels, input_masks=masks),
    "single": dict(input_points=points[:, :1], input_labels=labels[:, :1], multimask_output=False),
  }
  arrays = {"image": image.permute(0, 2, 3, 1).numpy()}
  with torch.no_grad():
    arrays["image_embeddings"] = (
      model.double().get_image_embeddings(image.double()).permute(0, 2, 3, 1).numpy()
    )
    for name, inputs in cases.items():
      for key, value in inputs.items():
        if torch.is_tensor(value):
          arrays[f"{name}/{key}"] = value.numpy()
      arrays[f"{name}/multimask_output"] = np.array(inputs.get("multimask_output", True))
      double = {
        k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v
        for k, v in inputs.items()
      }
      out64 = model.double()(pixel_values=image.double(), **double)
      out32 = model.float()(pixel_values=image, **inputs)
      arrays[f"{name}/pred_masks"] = out64.pred_masks.numpy().astype(np.float32)
      arrays[f"{name}/iou_scores"] = out64.iou_scores.numpy().astype(np.float32)
      arrays[f"{name}/pred_masks_torch_float32"] = out32.pred_masks.numpy()
      arrays[f"{name}/iou_scores_torch_float32"] = out32.iou_scores.numpy()
  np.savez_compressed(os.path.join(output, "sam_tiny_io.npz"), **arrays)
  sizes = {"transformers": transformers.__version__, "torch": torch.__version__}
  for name, vision in SAM_VARIANTS.items():
    with torch.device("meta"):
      big = SamModel(SamConfig(vision_config=vision))
    sizes[name] = sum(p.numel() for p in big.parameters())
  with open(os.path.join(output, "sam_sizes.json"), "w", encoding="utf-8") as f:
    json.dump(sizes, f, indent=2)
  print(json.dumps(sizes))


# DINOv2: a 2-block ViT of width 32 (4 heads) on 8x8 patches and a 5x5 position grid; the plain
# one with an MLP, the one with registers (2) with SwiGLU.
DINO_TINY = dict(
  hidden_size=32,
  num_hidden_layers=2,
  num_attention_heads=4,
  patch_size=8,
  image_size=40,
  layerscale_value=0.5,
)
DINO_VARIANTS = {  # facebook/dinov2-{small,base,large,giant}
  "vit_s": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6),
  "vit_b": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12),
  "vit_l": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16),
  "vit_g": dict(
    hidden_size=1536, num_hidden_layers=40, num_attention_heads=24, use_swiglu_ffn=True
  ),
}


def dinov2(output):
  """``dinov2_tiny/`` (``Dinov2Model``), ``dinov2_registers_tiny/`` (``Dinov2WithRegistersModel``,
  2 registers, SwiGLU) and ``dinov2_tiny_io.npz``: for each, images at the position grid's size
  (40x40, two images) and at other sizes (56x48: interpolated up; 24x32: down) NHWC and ``last_hidden_state``
  computed in float64 from the float32 weights (stored as float32); ``dinov2_sizes.json``: parameter counts of DINOv2
  ViT-S/B/L/g (patch 14, 518 px)."""
  arrays = {}
  for name, cls, config in (
    ("dinov2_tiny", Dinov2Model, Dinov2Config(**DINO_TINY)),
    (
      "dinov2_registers_tiny",
      Dinov2WithRegistersModel,
      Dinov2WithRegistersConfig(num_register_tokens=2, use_swiglu_ffn=True, **DINO_TINY),
    ),
  ):
    torch.manual_seed(3)
    model = cls(config).eval()
    unit_gain_(model)
    with torch.no_grad():
      model.embeddings.cls_token.normal_()
      model.embeddings.position_embeddings.normal_()
      if hasattr(model.embeddings, "register_tokens"):
        model.embeddings.register_tokens.normal_()
    model.save_pretrained(os.path.join(output, name), safe_serialization=True)
    model = model.double()
    for size in ((40, 40), (56, 48), (24, 32)):
      batch = 2 if size == (40, 40) else 1
      image = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(size[0]))
      with torch.no_grad():
        out = model(pixel_values=image.double()).last_hidden_state
      key = f"{name}_{size[0]}x{size[1]}"
      arrays[f"image_{key}"] = image.permute(0, 2, 3, 1).numpy().astype(np.float32)
      arrays[f"tokens_{key}"] = out.numpy().astype(np.float32)
  np.savez_compressed(os.path.join(output, "dinov2_tiny_io.npz"), **arrays)
  sizes = {"transformers": transformers.__version__, "torch": torch.__version__}
  for name, spec in DINO_VARIANTS.items():
    with torch.device("meta"):
      big = Dinov2Model(Dinov2Config(image_size=518, patch_size=14, **spec))
    sizes[name] = sum(p.numel() for p in big.parameters())
  with open(os.path.join(output, "dinov2_sizes.json"), "w", encoding="utf-8") as f:
    json.dump(sizes, f, indent=2)
  print(json.dumps(sizes))


def in_memory_state_dict(output):
  """``segformer_tiny_state_dict.safetensors``: the in-memory ``state_dict()`` of ``segformer_tiny/``
  loaded by this transformers (5 renames SegFormer's modules: ``segformer.stages.N...``, while
  ``save_pretrained`` writes the checkpoint names)."""
  from safetensors.torch import save_file  # pylint: disable=import-outside-toplevel

  model = SegformerForSemanticSegmentation.from_pretrained(os.path.join(output, "segformer_tiny"))
  state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
  save_file(
    state,
    os.path.join(output, "segformer_tiny_state_dict.safetensors"),
    metadata={"transformers": transformers.__version__},
  )


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--output", required=True)
  parser.add_argument(
    "--only", default="", help="segformer, mask2former, sam, dinov2 or state_dict (default: all)"
  )
  args = parser.parse_args()
  if args.only in ("", "dinov2"):
    dinov2(args.output)
  if args.only == "dinov2":
    return
  if args.only in ("", "sam"):
    sam(args.output)
  if args.only == "sam":
    return
  if args.only in ("", "mask2former"):
    mask2former(args.output)
  if args.only == "state_dict":
    in_memory_state_dict(args.output)
  if args.only in ("mask2former", "state_dict"):
    return
  torch.manual_seed(0)
  model = SegformerForSemanticSegmentation(SegformerConfig(**TINY)).eval()
  with torch.no_grad():  # weights of unit gain (transformers' std 0.02 leaves logits near 0)
    for name, p in model.named_parameters():
      if p.dim() > 1:
        p.normal_(0.0, float(p[0].numel()) ** -0.5)
      elif name.endswith("weight"):  # LayerNorm / BatchNorm scales
        p.uniform_(0.5, 1.5)
      else:
        p.normal_(0.0, 0.1)
    bn = model.decode_head.batch_norm
    bn.weight.uniform_(0.5, 1.5)
    bn.bias.normal_(0.0, 0.1)
    bn.running_mean.normal_(0.0, 0.2)
    bn.running_var.uniform_(0.5, 2.0)
  directory = os.path.join(args.output, "segformer_tiny")
  model.save_pretrained(directory, safe_serialization=True)
  image = torch.randn(2, 3, 40, 56, generator=torch.Generator().manual_seed(1))
  with torch.no_grad():
    logits32 = model(pixel_values=image).logits
    logits64 = model.double()(pixel_values=image.double()).logits
  nhwc = lambda t: t.permute(0, 2, 3, 1).numpy()
  np.savez_compressed(
    os.path.join(args.output, "segformer_tiny_io.npz"),
    image=nhwc(image).astype(np.float32),
    logits=nhwc(logits64).astype(np.float32),
    logits_torch_float32=nhwc(logits32),
  )
  sizes = {"transformers": transformers.__version__, "torch": torch.__version__}
  for name, spec in VARIANTS.items():
    big = SegformerForSemanticSegmentation(SegformerConfig(num_labels=150, **spec))
    sizes[name] = sum(p.numel() for p in big.parameters())
  with open(os.path.join(args.output, "segformer_sizes.json"), "w", encoding="utf-8") as f:
    json.dump(sizes, f, indent=2)
  print(json.dumps(sizes))
  in_memory_state_dict(args.output)


if __name__ == "__main__":
  main()
