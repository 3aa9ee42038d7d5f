"""Click models: any registered model made interactive (RITM's design, model-agnostic).

``interactive(base="unet", base_kwargs=...)`` reads the image and three prompt channels
(`segjax.interactive.training.prompt_input`: positive-click disks, negative-click disks, the
previous mask) and predicts the clicked object: ``logits`` ``[B, H, W, 2]`` (background, object),
whatever the dataset's classes. An input with only the image's channels means no clicks and no
previous mask (zeros), so the model also gives an automatic first mask and initialises from an
image batch. ``fusion`` joins the prompts to the image:

- ``"concat"``: the base model reads all ``image_channels + 3`` channels (from scratch);
- ``"project"``: a 1x1 convolution maps them back to ``image_channels``, initialised to pass the
  image through and ignore the prompts, so a base with pre-trained first-layer weights starts as
  it was trained.

Trained with ``config.step_inputs = "iterative_clicks(...)"`` (`segjax.interactive.training`);
evaluated by clicks with ``config.evals`` type ``interactive`` (`segjax.evaluators.interactive`).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from segjax import registry
from segjax.interactive.training import PROMPT_CHANNELS


def _pass_image(image_channels: int):
  def init(key, shape, dtype=jnp.float32):
    del key
    kernel = np.zeros(shape, np.float32)
    kernel[0, 0, :image_channels, :image_channels] = np.eye(image_channels)
    return jnp.asarray(kernel, dtype)

  return init


class Interactive(nn.Module):
  base: nn.Module
  image_channels: int = 3
  fusion: str = "concat"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, image, train: bool = False, **kwargs):
    channels = image.shape[-1]
    if channels == self.image_channels:
      image = jnp.concatenate(
        [image, jnp.zeros((*image.shape[:-1], PROMPT_CHANNELS), image.dtype)], axis=-1
      )
    elif channels != self.image_channels + PROMPT_CHANNELS:
      raise ValueError(
        f"interactive model: input with {channels} channels; it reads {self.image_channels} "
        f"(the image) or {self.image_channels + PROMPT_CHANNELS} (image, positive clicks, "
        "negative clicks, previous mask: segjax.interactive.training.prompt_input)"
      )
    if self.fusion == "project":
      image = nn.Conv(
        self.image_channels,
        (1, 1),
        kernel_init=_pass_image(self.image_channels),
        dtype=self.dtype,
        name="prompt_fusion",
      )(image)
    elif self.fusion != "concat":
      raise ValueError(f"interactive model: fusion={self.fusion!r}; use 'concat' or 'project'")
    return self.base(image, train=train, **kwargs)


@registry.register("model", "interactive")
def _interactive(
  num_classes: int,
  base: str = "unet",
  base_kwargs: dict | None = None,
  dtype=jnp.float32,
  **kwargs,
) -> Interactive:
  """The click model around the registered model ``base`` (``base_kwargs``; two classes: the
  dataset's ``num_classes`` does not apply)."""
  del num_classes
  make = registry.lookup("model", base, num_classes=2, dtype=dtype, **(base_kwargs or {}))
  return Interactive(base=make(), dtype=dtype, **kwargs)
