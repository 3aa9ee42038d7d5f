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

from segjax.config_defaults import data_config
from segjax.config_defaults import shapes_config


def get_config():
  config = shapes_config()
  config.data = data_config(
    name="folder",
    patch_size=(128, 128),
    patch_stride=(96, 96),
    min_labelled_fraction=0.5,
    class_balanced=0.5,
    crop_size=(128, 128),
    train_pp="flip_lr",
  )
  config.model = dict(name="unet", features=8, depth=4, dtype="float32")
  config.batch_size = 8
  config.num_train_steps = 1500
  config.eval_batch_size = 4
  config.predict.split = "validation"
  config.predict.num_images = 2
  return config
