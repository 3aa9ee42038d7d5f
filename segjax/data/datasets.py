"""Datasets by name: one registry entry (kind ``"dataset"``) per dataset ``config.data.name`` can
name — the built-in ``shapes``, ``folder``, the catalogue's ``tfds:<name>`` adapters and any a user
registers (`register_dataset`, `register_tfds`; docs/extending.md) — each a way to build and
prepare it (`get_source`) and a description read from code and config alone (`dataset_info`)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

from segjax import registry
from segjax.data import catalogue
from segjax.data import folder
from segjax.data import preparing
from segjax.data import shapes
from segjax.data import stream
from segjax.data.descriptor import DatasetDescriptor


@dataclasses.dataclass
class Source:
  """A prepared tfds dataset, its descriptor, the function that maps its examples to segjax's
  features (None: they are already) and whether they carry instance maps (None: whether the
  builder's features have ``instance``)."""

  builder: tfds.core.DatasetBuilder
  descriptor: DatasetDescriptor
  adapt: Callable[[dict], dict] | None = None
  instances: bool | None = None


@dataclasses.dataclass(frozen=True)
class DataInfo:
  """What planning needs to know of a dataset without preparing it: its descriptor, whether its
  examples carry instance maps, the image size when every image has the same, the image's
  channels and storage type, and the size and file format the input plan decodes (``plan_size``
  None: the training crop)."""

  descriptor: DatasetDescriptor
  instances: bool
  image_size: tuple[int, int] | None = None
  channels: int = 3
  dtype: tf.DType = tf.uint8
  plan_size: tuple[int, int] | None = None
  image_format: str = "png"


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A dataset ``config.data.name`` can name: ``source(data_config) -> Source`` builds and prepares
  it (once, offline); ``info(data_config) -> DataInfo`` describes it from code and config alone
  (planning reads no data). Registered under kind ``"dataset"`` (`register_dataset`,
  `register_tfds`); docs/extending.md."""

  source: Callable[[ml_collections.ConfigDict], Source]
  info: Callable[[ml_collections.ConfigDict], DataInfo]


def register_dataset(name: str, info: Callable[[ml_collections.ConfigDict], DataInfo]):
  """Decorator: registers the ``source`` function it decorates, with ``info``, as dataset
  ``name``."""

  def decorator(source):
    registry.register("dataset", name)(Dataset(source, info))
    return source

  return decorator


def register_tfds(name: str, adapter: catalogue.Adapter) -> None:
  """Registers a prepared tfds dataset as ``"tfds:<name>"``: ``adapter`` names its builder, its
  `DatasetDescriptor` and the function that maps its examples to ``image``/``semantic``
  (/``instance``) — the catalogue's own datasets are registered so."""
  registry.register("dataset", "tfds:" + name)(
    Dataset(
      lambda data_config: _tfds_source(adapter, data_config),
      lambda data_config: DataInfo(
        adapter.descriptor,
        adapter.instances,
        adapter.image_size,
        plan_size=adapter.plan_size,
        image_format=adapter.image_format,
      ),
    )
  )


def dataset(data_config) -> Dataset:
  """The registry entry ``data_config.name`` names (a `Dataset`)."""
  name = data_config.name
  try:
    if name.startswith("tfds:") or not registry.is_importable(name):
      entry = registry.get("dataset", name)
    else:
      entry = registry.import_object(name)
  except KeyError as e:
    raise KeyError(f"config.data.name: {e.args[0]}") from None
  if not isinstance(entry, Dataset):
    raise TypeError(
      f"config.data.name={name!r} is a {type(entry).__name__}, not a segjax.data.pipeline.Dataset."
    )
  return entry


def dataset_info(data_config) -> DataInfo:
  """`DataInfo` of ``data_config``'s dataset, read from code and config alone (no data)."""
  return dataset(data_config).info(data_config)


def get_source(data_config: ml_collections.ConfigDict) -> Source:
  """Builds (preparing once, offline) the dataset ``data_config.name`` names in the registry:
  ``"shapes"`` (the built-in dataset), ``"folder"`` (the user's images and masks under
  ``data_config.root``), ``"tfds:<name>"`` (a catalogue adapter, `segjax.data.catalogue`), one a
  user registered, or ``"package.module:dataset"`` (a `Dataset` object)."""
  return dataset(data_config).source(data_config)


def _folder_classes(data_config):
  return data_config.get("classes") or None, tuple(data_config.get("thing_classes") or ())


def _folder_info(data_config) -> DataInfo:
  names, things = _folder_classes(data_config)
  if not names:
    raise ValueError(
      "Planning a folder dataset without its data needs config.data.classes "
      "(the class names) and config.data.thing_classes."
    )
  descriptor = folder.descriptor_of(folder.configured_classes(names, things))
  return DataInfo(descriptor, False, None, data_config.get("channels", 3), tf.uint16)


@register_dataset("folder", _folder_info)
def _folder_source(data_config) -> Source:
  if not data_config.get("root"):
    raise KeyError(
      "config.data.root must name the folder dataset's directory (--config.data.root=DATA)."
    )
  names, things = _folder_classes(data_config)
  builder = prepare_once(
    lambda: stream.ensure_index(
      folder.prepare(
        data_config.root,
        data_dir=data_config.get("data_dir"),
        skip_bad=data_config.get("skip_bad", False),
        classes=names,
        thing_classes=things,
      )
    )
  )
  return Source(builder, builder.descriptor())


def _tfds_source(adapter: catalogue.Adapter, data_config) -> Source:
  builder = tfds.builder(adapter.builder, data_dir=data_config.get("data_dir"))
  if not builder.is_prepared():
    if adapter.builder not in catalogue.SEGJAX_BUILDERS:
      raise FileNotFoundError(
        f"tfds dataset {adapter.builder} is not prepared in {builder.data_dir}; prepare it "
        f"once with tfds (tfds build {adapter.builder}, with its manual download if it needs "
        "one)."
      )
  builder = prepare_once(
    lambda: prepared(tfds.builder(adapter.builder, data_dir=data_config.get("data_dir")))
  )
  return Source(builder, adapter.descriptor, adapter.adapt, adapter.instances)


for _name, _adapter in catalogue.ADAPTERS.items():
  register_tfds(_name, _adapter)


def _shapes_info(data_config) -> DataInfo:
  size = data_config.image_size
  return DataInfo(shapes.DESCRIPTOR, True, (size, size), plan_size=(size, size))


@register_dataset("shapes", _shapes_info)
def _shapes_source(data_config) -> Source:
  def make_and_prepare():
    return prepared(
      shapes.make_builder(
        data_dir=data_config.get("data_dir"),
        image_size=data_config.image_size,
        num_train=data_config.num_train,
        num_validation=data_config.num_validation,
        num_test=data_config.num_test,
        seed=data_config.dataset_seed,
        max_things=data_config.get("max_things", 6),
        radii=tuple(data_config.get("radii", shapes.DEFAULT_RADII)),
        thin=data_config.get("thin", 0.0),
      )
    )

  return Source(prepare_once(make_and_prepare), shapes.DESCRIPTOR)


def has_instances(source: Source) -> bool:
  """Whether the examples of ``source`` carry instance maps (and so panoptic labels)."""
  if source.instances is not None:
    return source.instances
  return "instance" in source.builder.info.features


def prepared(builder):
  """``builder`` prepared (quietly) and given the record index the training stream reads by."""
  return stream.ensure_index(preparing.prepare_quietly(builder))


def prepare_once(prepare: Callable):
  """``prepare()`` (which builds *and* prepares a tfds builder: one built before the data exists
  would not see it) on process 0 first and, after all processes meet, on the others: with a shared
  ``data_dir`` they find the dataset written (no two processes write it at once); on local disks
  every host prepares its own copy."""
  import jax  # pylint: disable=import-outside-toplevel

  if jax.process_count() == 1:
    return prepare()
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

  result = prepare() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices("segjax: dataset prepared by process 0")
  return result if jax.process_index() == 0 else prepare()
