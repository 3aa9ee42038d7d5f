r"""UNet on the user's own images and masks (a folder dataset), trained on patches.

  python experiments/train.py --config=configs/unet_folder.py --config.data.root=DATA \
      --workdir=/tmp/segjax/unet_folder

DATA holds train/images + train/masks (+ val/...), see segjax/data/folder.py and the README. Training
cuts every image into a grid of overlapping patches (``data.patch_size``/``patch_stride``), drops
patches with less than ``min_labelled_fraction`` labelled pixels and, with ``class_balanced`` > 0,
draws that share of the patches class-uniformly (rare classes oversampled). Validation runs on whole
images, each at its own size (images of one size share a batch); ``eval_size_multiple`` or
``eval_pad_to`` pad each image (padding ignored by the metrics) so that fewer sizes compile.
"""
from ml_collections.config_dict import placeholder

from segjax.config_defaults import shapes_config


def get_config():
  config = shapes_config()
  config.data = dict(
      name="folder", root="", data_dir=placeholder(str), skip_bad=False, train_split="train",
      channels=3, normalization="mean_std", percentiles=(1.0, 99.0),
      mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
      patch_size=(128, 128), patch_stride=(96, 96), min_labelled_fraction=0.5,
      class_balanced=0.5, crop_size=(128, 128),
      train_pp="flip_lr", eval_pp="", eval_pad_to=placeholder(tuple),
      eval_size_multiple=placeholder(int), eval_pad_mode="reflect")
  config.model = dict(name="unet", features=8, depth=4, dtype="float32")
  config.batch_size = 8
  config.num_train_steps = 1500
  config.eval_batch_size = 4
  config.predict.split = "validation"
  config.predict.num_images = 2
  return config
