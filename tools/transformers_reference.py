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
"""
import argparse
import json
import os

import numpy as np
import torch
import transformers
from transformers import SegformerConfig, SegformerForSemanticSegmentation

TINY = dict(num_channels=3, num_encoder_blocks=4, depths=[1, 2, 1, 1], sr_ratios=[8, 4, 2, 1],
            hidden_sizes=[8, 16, 24, 32], num_attention_heads=[1, 2, 3, 4],
            decoder_hidden_size=16, num_labels=5)
# The MiT variants of the paper (transformers' nvidia/mit-b0 ... mit-b5 configs).
VARIANTS = {"b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2], decoder_hidden_size=256),
            "b5": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 6, 40, 3],
                       decoder_hidden_size=768)}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--output", required=True)
  args = parser.parse_args()
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
  np.savez_compressed(os.path.join(args.output, "segformer_tiny_io.npz"),
                      image=nhwc(image).astype(np.float32),
                      logits=nhwc(logits64).astype(np.float32),
                      logits_torch_float32=nhwc(logits32))
  sizes = {"transformers": transformers.__version__, "torch": torch.__version__}
  for name, spec in VARIANTS.items():
    big = SegformerForSemanticSegmentation(SegformerConfig(num_labels=150, **spec))
    sizes[name] = sum(p.numel() for p in big.parameters())
  with open(os.path.join(args.output, "segformer_sizes.json"), "w", encoding="utf-8") as f:
    json.dump(sizes, f, indent=2)
  print(json.dumps(sizes))


if __name__ == "__main__":
  main()
