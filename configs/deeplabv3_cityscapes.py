r"""DeepLabV3, ResNet-101 at output stride 8, on Cityscapes (19 classes): MMSegmentation's recipe
``deeplabv3_r101-d8_4xb2-80k_cityscapes-512x1024``.

Reference: 80.20 mIoU on val, single-scale (81.21 multi-scale + flip), MMSegmentation model zoo
(configs/deeplabv3/README.md; its ResNet-101 is the "v1c" variant with a deep stem, ImageNet
pretrained). The paper (Chen et al. 2017) reports 81.3 on test with extra data.

Recipe: crops of 512x1024 after random scaling by 0.5-2.0 and flips, photometric distortion;
batch 8; 80k steps of SGD (lr 0.01, momentum 0.9, weight decay 5e-4, poly 0.9 to 1e-4);
cross-entropy plus the auxiliary FCN head on layer3 (weight 0.4); evaluation on whole 1024x2048
images. Start the backbone from torchvision's ImageNet ResNet-101
(``--config.model.pretrained=resnet101.safetensors``).

  tfds build cityscapes/semantic_segmentation --manual_dir=...   # once
  python experiments/plan.py --config=configs/deeplabv3_cityscapes.py --topology=v5e:4x8
  python experiments/train.py --config=configs/deeplabv3_cityscapes.py --workdir=gs://.../run \
      --config.model.pretrained=resnet101.safetensors --distributed=on   # on every pod host
"""

from segjax.recipes import mmseg_deeplab_recipe


def get_config():
  return mmseg_deeplab_recipe(
    "deeplabv3",
    "tfds:cityscapes",
    crop_size=(512, 1024),
    batch_size=8,
    num_train_steps=80_000,
    reference="80.20 mIoU (MMSegmentation)",
  )
