"""``shapes``: the built-in, procedurally generated dataset (no download, deterministic from a seed).

Each scene is a background split into two textured *stuff* regions (``stripes``: oriented bands;
``speckle``: blotchy cells) over which a few *things* (``disc``, ``triangle``, ``square``) are drawn
with random colour, size, rotation and position; later shapes occlude earlier ones and shapes may
leave the frame. Colours of textures and shapes are drawn independently of the class, then the
picture is blurred and noised, so a model must read texture and geometry, not colour.
Labels: ``semantic`` (class ids), ``instance`` (1..N per image for things, 0 elsewhere) and
``panoptic`` (``class * 1000 + instance``).
"""

from __future__ import annotations

import hashlib
import os

import cv2
import numpy as np
import tensorflow_datasets as tfds

from segjax.data.descriptor import DatasetDescriptor

STUFF = ("stripes", "speckle")
THINGS = ("disc", "triangle", "square")
LABEL_DIVISOR = 1000

DESCRIPTOR = DatasetDescriptor(
  name="shapes",
  class_names=STUFF + THINGS,
  colormap=((70, 130, 60), (150, 120, 90), (220, 50, 50), (60, 90, 230), (240, 200, 40)),
  stuff_classes=(0, 1),
  thing_classes=(2, 3, 4),
  ignore_label=255,
  label_divisor=LABEL_DIVISOR,
)


def _smooth_field(rng, size, cells):
  field = rng.random((cells, cells)).astype(np.float32)
  return cv2.resize(field, (size, size), interpolation=cv2.INTER_CUBIC)


def _random_colour(rng, away_from=None, min_distance=0.0):
  """A uniform random RGB colour at least ``min_distance`` from ``away_from`` (so it stays visible)."""
  while True:
    colour = rng.integers(0, 256, size=3).astype(np.float32)
    if away_from is None or np.linalg.norm(colour - away_from) >= min_distance:
      return colour


def _two_colours(rng):
  first = _random_colour(rng)
  return first, _random_colour(rng, away_from=first, min_distance=90.0)


def _stripes(rng, size):
  yy, xx = np.mgrid[:size, :size].astype(np.float32)
  angle = rng.uniform(0, np.pi)
  period = rng.uniform(5.0, 10.0)
  wave = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
  light, dark = _two_colours(rng)
  return wave[..., None] * light + (1 - wave[..., None]) * dark


def _speckle(rng, size):
  cell = int(rng.integers(3, 6))
  cells = -(-size // cell)
  blots = (rng.random((cells, cells)) < 0.5).astype(np.float32)  # two-colour blocks
  blots = cv2.resize(blots, (cells * cell, cells * cell), interpolation=cv2.INTER_NEAREST)[
    :size, :size
  ]
  light, dark = _two_colours(rng)
  return blots[..., None] * light + (1 - blots[..., None]) * dark


def _shape_polygon(kind, centre, radius, angle, stretch=None):
  if kind == "triangle":
    corners, radius = 3, radius * 1.25  # similar area to the disc and square
  elif kind == "square":
    corners, radius = 4, radius * 1.1
  else:
    corners = 64  # a disc, as a polygon (only when stretched into an ellipse)
  angles = angle + 2 * np.pi * np.arange(corners) / corners
  offsets = np.stack([radius * np.cos(angles), radius * np.sin(angles)], -1)
  if stretch is not None:  # (factor, direction): longer by factor along it, shorter across
    factor, direction = stretch
    axis = np.array([np.cos(direction), np.sin(direction)])
    along = offsets @ axis
    offsets = offsets + np.outer(along * (factor - 1.0), axis)
    across = offsets - np.outer(offsets @ axis, axis)
    offsets = offsets - across * (1.0 - 1.0 / factor)
  return np.round((np.asarray(centre) + offsets) * 16).astype(np.int32)  # 4 fractional bits


DEFAULT_RADII = (0.09, 0.28)


def render_scene(
  rng: np.random.Generator,
  size: int,
  max_things: int = 6,
  radii: tuple[float, float] = DEFAULT_RADII,
  thin: float = 0.0,
):
  """Draws one scene. Returns ``image`` uint8 ``[S,S,3]``, ``semantic`` uint8, ``instance`` uint16.

  Thing radii are log-uniform over ``radii`` (fractions of ``size``); with ``thin`` > 0, that
  share of the things is stretched 3-10x along a random direction and squeezed as much across
  it (same area): bars, needles and slivers of each class."""
  region = _smooth_field(rng, size, cells=3) > rng.uniform(0.35, 0.65)
  semantic = region.astype(np.uint8)  # 0 = stripes, 1 = speckle
  image = np.where(region[..., None], _speckle(rng, size), _stripes(rng, size))
  instance = np.zeros((size, size), np.uint16)
  num_things = int(rng.integers(2, max_things + 1))
  for index in range(1, num_things + 1):
    class_id = int(rng.integers(len(THINGS)))
    # Log-uniform radius: many small shapes, some large ones.
    radius = size * np.exp(rng.uniform(np.log(radii[0]), np.log(radii[1])))
    centre = rng.uniform(-0.05, 1.05, size=2) * size
    stretch = None
    if thin > 0 and rng.random() < thin:  # (no draw at all for thin = 0: the same scenes)
      stretch = (rng.uniform(3.0, 10.0), rng.uniform(0, np.pi))
    mask = np.zeros((size, size), np.uint8)
    if stretch is not None:
      polygon = _shape_polygon(THINGS[class_id], centre, radius, rng.uniform(0, 2 * np.pi), stretch)
      cv2.fillPoly(mask, [polygon], 1, lineType=cv2.LINE_8, shift=4)
    elif THINGS[class_id] == "disc":
      cv2.circle(
        mask,
        tuple(np.round(centre * 16).astype(int)),
        int(round(radius * 16)),
        1,
        -1,
        lineType=cv2.LINE_8,
        shift=4,
      )
    else:
      polygon = _shape_polygon(THINGS[class_id], centre, radius, rng.uniform(0, 2 * np.pi))
      cv2.fillPoly(mask, [polygon], 1, lineType=cv2.LINE_8, shift=4)
    mask = mask.astype(bool)
    if not mask.any():
      continue
    colour = _random_colour(rng, away_from=image[mask].mean(axis=0), min_distance=60.0)
    shade = 1.0 + 0.25 * (_smooth_field(rng, size, cells=2) - 0.5)  # mild shading inside the shape
    image[mask] = np.clip(colour * shade[mask][:, None], 0, 255)
    semantic[mask] = len(STUFF) + class_id
    instance[mask] = index
  # Renumber the visible instances 1..N (occluded or out-of-frame ones vanish).
  visible = np.unique(instance[instance > 0])
  lookup = np.zeros(num_things + 1, np.uint16)
  lookup[visible] = np.arange(1, len(visible) + 1)
  instance = lookup[instance]
  image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigmaX=rng.uniform(0.3, 0.8))
  image = image + rng.normal(0, rng.uniform(2, 8), size=image.shape)
  return np.clip(np.round(image), 0, 255).astype(np.uint8), semantic, instance


class ShapesConfig(tfds.core.BuilderConfig):
  """Size and example counts of a ``shapes`` variant; a new combination is a new prepared dataset."""

  def __init__(
    self,
    *,
    image_size=96,
    num_train=2000,
    num_validation=200,
    num_test=200,
    seed=0,
    max_things=6,
    radii=DEFAULT_RADII,
    thin=0.0,
    name=None,
    **kwargs,
  ):
    radii = tuple(float(r) for r in radii)
    if not (len(radii) == 2 and 0 < radii[0] <= radii[1]):
      raise ValueError(
        f"config.data.radii={radii}: two fractions of the image size, 0 < min <= max"
      )
    if not 0.0 <= thin <= 1.0:
      raise ValueError(f"config.data.thin={thin}: a share of the things, in [0, 1]")
    variant = ("" if radii == DEFAULT_RADII else f"_r{radii[0]:g}-{radii[1]:g}") + (
      f"_thin{thin:g}" if thin else ""
    )
    name = name or (
      f"s{image_size}_n{num_train}-{num_validation}-{num_test}_t{max_things}{variant}_seed{seed}"
    )
    super().__init__(name=name, **kwargs)
    self.radii, self.thin = radii, float(thin)
    self.image_size = image_size
    self.splits = {"train": num_train, "validation": num_validation, "test": num_test}
    self.seed = seed
    self.max_things = max_things


class Shapes(tfds.core.GeneratorBasedBuilder):
  """The built-in procedural segmentation dataset (see module docstring)."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    size = self.builder_config.image_size
    return self.dataset_info_from_configs(
      description=__doc__,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(size, size, 3)),
          "semantic": tfds.features.Image(shape=(size, size, 1), dtype=np.uint8),
          "instance": tfds.features.Image(shape=(size, size, 1), dtype=np.uint16),
          "name": tfds.features.Text(),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {
      split: self._generate_examples(split, count)
      for split, count in self.builder_config.splits.items()
      if count > 0
    }

  def _generate_examples(self, split, count):
    config = self.builder_config
    split_key = int(hashlib.sha256(split.encode()).hexdigest()[:8], 16)
    for index in range(count):
      rng = np.random.default_rng([config.seed, split_key, index])
      image, semantic, instance = render_scene(
        rng, config.image_size, config.max_things, config.radii, config.thin
      )
      name = f"{split}_{index:06d}"
      yield (
        name,
        {
          "image": image,
          "semantic": semantic[..., None],
          "instance": instance[..., None],
          "name": name,
        },
      )


def make_builder(*, data_dir=None, **config_kwargs) -> tfds.core.DatasetBuilder:
  """A ``Shapes`` builder of the `ShapesConfig` of ``config_kwargs``."""
  return Shapes(config=ShapesConfig(**config_kwargs), data_dir=data_dir)


def write_folder(
  root: str, image_size: int, counts: dict, *, max_things: int = 60, seed: int = 0
) -> None:
  """Scenes as a folder dataset (`segjax.data.folder`): ``root/<split>/{images,masks,instances}/``
  PNGs, ``counts`` images per split (e.g. ``{"train": 8, "val": 2}``), and ``classes.json``."""
  from segjax import prelabels  # pylint: disable=import-outside-toplevel
  from segjax import files  # pylint: disable=import-outside-toplevel

  os.makedirs(root, exist_ok=True)
  files.write_json(os.path.join(root, "classes.json"), prelabels.classes_json(DESCRIPTOR))
  for split, count in counts.items():
    for sub in ("images", "masks", "instances"):
      os.makedirs(os.path.join(root, split, sub), exist_ok=True)
    for index in range(count):
      rng = np.random.default_rng([seed, 7 + (split == "val"), index])
      image, semantic, instance = render_scene(rng, image_size, max_things)
      name = f"{split}_{index:04d}.png"
      cv2.imwrite(os.path.join(root, split, "images", name), image[..., ::-1])
      cv2.imwrite(os.path.join(root, split, "masks", name), semantic)
      cv2.imwrite(os.path.join(root, split, "instances", name), instance)
