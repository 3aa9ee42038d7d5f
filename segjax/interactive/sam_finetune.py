"""Fine-tuning SAM's mask decoder on a folder of images with instance masks, clicks simulated from
the masks; the image encoder frozen and its embeddings computed once per image.

  model, variables = models.from_pretrained("hf-hub:facebook/sam-vit-base")
  tuned, log = sam_finetune.finetune(model, variables, "DATA", steps=500)
  sam_finetune.save(model, tuned, "OUT", like="hf-hub:facebook/sam-vit-base")  # loads as SAM

The folder is a segjax folder dataset (``DATA/train/images``, ``DATA/train/instances``: one object
per instance id). Each step draws ``batch`` objects; each gets RITM's first clicks on the 4x
grid of SAM's masks (`segjax.interactive.training.initial_clicks`: 1 to
``max_positive`` positive, 0 to ``max_negative`` negative within ``negative_band``) and then 0 to
``max_iterations`` clicks where the decoder's own mask (without gradient) is wrong
(`segjax.interactive.training.next_click`; clicks only, no mask prompt, as
`segjax.interactive.predictor.SamPredictor` prompts SAM). The loss is SAM's: focal (weight 20) + Dice on the mask of lowest loss among the three
(one mask when the prompt has more than one click), plus the squared error of the predicted IoU.
Only ``mask_decoder`` changes (AdamW); the image and prompt encoders keep their weights.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from segjax.interactive import training
from segjax.models import sam as sam_lib


def read_objects(root: str, split: str = "train"):
  """``(images [N, H, W, 3] 0..255, instances [N, H, W])`` of a folder dataset's split (images of
  one size; grey images repeated to 3 channels)."""
  from segjax.data import folder  # pylint: disable=import-outside-toplevel

  images, instances = [], []
  for stem, example in folder.split_examples(os.path.join(root, split), None):
    if example["instance"] is None:
      raise ValueError(f"{root}/{split}: {stem} has no instance mask (instances/{stem}.png)")
    image = np.asarray(example["image"], np.float32)
    if image.shape[-1] == 1:
      image = np.repeat(image, 3, axis=-1)
    if example["image"].dtype == np.uint16:
      image = image / 257.0
    images.append(image[..., :3])
    instances.append(np.asarray(example["instance"], np.int32))
  if not images:
    raise ValueError(f"{root}/{split}: no images")
  if len({i.shape for i in images}) != 1:
    raise ValueError(f"{root}/{split}: SAM fine-tuning here takes images of one size")
  return np.stack(images), np.stack(instances)


def _low_res(instances: np.ndarray, size: int, low: int) -> np.ndarray:
  """Instance maps on the ``low`` x ``low`` grid of SAM's masks (the input's long side resized to
  ``size`` and padded, then down-sampled), nearest neighbour."""
  import cv2  # pylint: disable=import-outside-toplevel

  scale = low / max(instances.shape[1:3])
  height, width = (int(round(n * scale)) for n in instances.shape[1:3])
  out = np.zeros((len(instances), low, low), np.int32)
  for i, m in enumerate(instances):
    out[i, :height, :width] = cv2.resize(m, (width, height), interpolation=cv2.INTER_NEAREST)
  return out


def loss_fn(masks, iou_pred, target, valid):
  """SAM's loss of ``masks`` ``[B, M, h, w]`` (logits) against ``target`` ``[B, h, w]``: 20 x focal
  + Dice of the best of the M masks, + the squared error of its predicted IoU."""
  target = target[:, None].astype(jnp.float32)
  p = jax.nn.sigmoid(masks)
  ce = optax.sigmoid_binary_cross_entropy(masks, target)
  p_t = p * target + (1 - p) * (1 - target)
  alpha = 0.25 * target + 0.75 * (1 - target)
  focal = jnp.mean(alpha * ce * (1 - p_t) ** 2, axis=(2, 3))
  dice = 1 - (2 * jnp.sum(p * target, (2, 3)) + 1) / (jnp.sum(p + target, (2, 3)) + 1)
  per_mask = 20 * focal + dice
  best = jnp.argmin(per_mask, axis=1)
  hard = masks > 0
  inter = jnp.sum(hard & (target > 0.5), (2, 3))
  union = jnp.sum(hard | (target > 0.5), (2, 3))
  iou = inter / jnp.maximum(union, 1)
  take = lambda a: jnp.take_along_axis(a, best[:, None], axis=1)[:, 0]
  total = take(per_mask) + (take(iou_pred) - jax.lax.stop_gradient(take(iou))) ** 2
  return jnp.sum(total * valid) / jnp.maximum(jnp.sum(valid), 1), take(iou)


def finetune(
  model: sam_lib.Sam,
  variables: dict,
  root: str,
  *,
  steps: int = 500,
  batch: int = 8,
  learning_rate: float = 1e-4,
  max_positive: int = 2,
  max_negative: int = 1,
  negative_band: float = 8.0,
  max_iterations: int = 2,
  seed: int = 0,
  log_every: int = 50,
  log=print,
):
  """``(variables with a fine-tuned mask decoder, [{step, loss, iou}])`` (module docstring;
  ``loss`` and ``iou``: their means over the steps since the previous entry)."""
  images, instances = read_objects(root)
  vision = dict(model.vision or {})
  size = vision.get("image_size", 1024)
  grid = 4 * (size // vision.get("patch_size", 16))  # the masks' side
  embed = jax.jit(lambda v, x: model.apply(v, x, method=sam_lib.Sam.embed_image))
  embeddings = np.concatenate(
    [np.asarray(embed(variables, sam_lib.prepare_image(im, size)[0][None])) for im in images]
  )
  low = _low_res(instances, size, grid)
  objects = [(i, v) for i in range(len(low)) for v in np.unique(low[i][low[i] > 0])]
  if not objects:
    raise ValueError(f"{root}/train: no instances")
  log(f"SAM fine-tuning: {len(objects)} objects in {len(images)} images, embeddings cached")
  params = variables["params"]
  frozen = {k: v for k, v in params.items() if k != "mask_decoder"}
  tx = optax.adamw(learning_rate, weight_decay=1e-4)
  opt_state = tx.init(params["mask_decoder"])

  def decode(decoder, e, clicks, multimask):
    # clicks [B, N, 3] (row, column, kind) on the low-resolution grid: pixel centres in the input
    points = ((clicks[..., 1::-1].astype(jnp.float32) + 0.5) * (size / grid))[:, None]
    labels = jnp.where(clicks[..., 2] > 0, 1, jnp.where(clicks[..., 2] < 0, 0, -10))[:, None]
    out = model.apply(
      {"params": {**frozen, "mask_decoder": decoder}},
      e,
      points,
      labels,
      multimask_output=multimask,
      method=sam_lib.Sam.decode,
    )
    return out["pred_masks"][:, 0], out["iou_scores"][:, 0]

  @jax.jit
  def step(decoder, opt_state, e, target, rng):
    keep = jnp.ones_like(target)
    rngs = jax.random.split(rng, 3)
    first = jax.vmap(
      lambda t, k, r: training.initial_clicks(t, k, r, max_positive, max_negative, negative_band)
    )(target, keep, jax.random.split(rngs[0], target.shape[0]))
    clicks = jnp.concatenate(
      [first, jnp.zeros((target.shape[0], max_iterations, 3), jnp.int32)], axis=1
    )
    iterations = jax.random.randint(rngs[1], (), 0, max_iterations + 1)

    def iterate(i, clicks):
      masks, _ = decode(jax.lax.stop_gradient(decoder), e, clicks, False)
      new = jax.vmap(training.next_click)(
        target, masks[:, 0] > 0, keep, jax.random.split(jax.random.fold_in(rngs[2], i), len(target))
      )
      return jax.lax.dynamic_update_slice(clicks, new[:, None], (0, first.shape[1] + i, 0))

    clicks = jax.lax.fori_loop(0, iterations, iterate, clicks)
    many = jnp.sum(clicks[..., 2] != 0, axis=1) > 1

    def objective(decoder):
      multi, multi_iou = decode(decoder, e, clicks, True)
      single, single_iou = decode(decoder, e, clicks, False)
      loss_multi, iou_multi = loss_fn(multi, multi_iou, target, (~many).astype(jnp.float32))
      loss_single, iou_single = loss_fn(single, single_iou, target, many.astype(jnp.float32))
      share = jnp.mean(many.astype(jnp.float32))
      iou = jnp.where(many, iou_single, iou_multi)
      return (1 - share) * loss_multi + share * loss_single, jnp.mean(iou)

    (loss, iou), grads = jax.value_and_grad(objective, has_aux=True)(decoder)
    updates, opt_state = tx.update(grads, opt_state, decoder)
    return optax.apply_updates(decoder, updates), opt_state, loss, iou

  rng = np.random.default_rng(seed)
  decoder, history, since = params["mask_decoder"], [], []
  for n in range(1, steps + 1):
    picks = [objects[k] for k in rng.integers(0, len(objects), batch)]
    e = embeddings[[i for i, _ in picks]]
    target = np.stack([low[i] == v for i, v in picks])
    decoder, opt_state, loss, iou = step(decoder, opt_state, e, target, jax.random.key(seed + n))
    since.append((loss, iou))
    if n % log_every == 0 or n == steps:
      loss, iou = (float(np.mean([float(x[j]) for x in since])) for j in (0, 1))
      history.append({"step": n, "loss": loss, "iou": iou})
      since = []
      log(f"step {n}/{steps}: loss {loss:.4f}, IoU of the prompted masks {iou:.3f} (means)")
  return {**variables, "params": {**params, "mask_decoder": decoder}}, history


def save(model: sam_lib.Sam, variables: dict, directory: str, like) -> str:
  """Writes ``variables`` as transformers' ``SamModel`` files (``config.json`` from ``like``'s
  checkpoint, ``model.safetensors`` in its key names and layouts) to ``directory``, so
  `segjax.models.from_pretrained` (and Label Studio's ``--interactive``) loads it."""
  import flax  # pylint: disable=import-outside-toplevel
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel

  from segjax import files  # pylint: disable=import-outside-toplevel
  from segjax.models import pretrained  # pylint: disable=import-outside-toplevel

  del model
  config = pretrained.read_source(like).config
  if not config:
    raise ValueError(f"{like}: no config.json to write beside the weights")
  state = {}
  for path, value in flax.traverse_util.flatten_dict(flax.core.unfreeze(variables)).items():
    state[sam_lib.hf_key(path)] = np.ascontiguousarray(
      sam_lib.to_torch_layout(path, np.asarray(value))
    )
  os.makedirs(directory, exist_ok=True)
  files.write_json(os.path.join(directory, "config.json"), config)
  with files.atomic_path(os.path.join(directory, "model.safetensors")) as tmp:
    save_file(state, tmp)
  return directory
