r"""Fine-tunes Segment Anything's mask decoder on a folder of images with instance masks
(segjax/interactive/sam_finetune.py: clicks simulated from the masks, the image encoder frozen, its
embeddings computed once):

  python experiments/finetune_sam.py --sam=hf-hub:facebook/sam-vit-base --data=DATA \
      --output=/tmp/segjax/sam_tuned [--steps=500 --learning_rate=1e-4]

DATA is a folder dataset with ``train/images`` and ``train/instances``. ``--output`` receives
transformers' ``SamModel`` files (config.json, model.safetensors) and ``finetune.json`` (the
loss and IoU log); ``--interactive=OUTPUT`` of experiments/label_studio.py serves it.
"""

from absl import flags

from segjax import cli

_SAM = flags.DEFINE_string("sam", None, "A SAM checkpoint: a directory or an hf-hub: name.")
_DATA = flags.DEFINE_string("data", None, "A folder dataset with train/images and train/instances.")
_OUTPUT = flags.DEFINE_string("output", None, "Directory for the fine-tuned checkpoint.")
_STEPS = flags.DEFINE_integer("steps", 500, "Steps (batches of objects).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Objects per step.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-4, "AdamW's learning rate.")
flags.mark_flags_as_required(["sam", "data", "output"])
flags.adopt_module_key_flags(cli)


def main(argv):
  del argv
  # pylint: disable=import-outside-toplevel
  import os

  from segjax import files
  from segjax import models
  from segjax.interactive import sam_finetune

  model, variables = models.from_pretrained(_SAM.value)
  tuned, history = sam_finetune.finetune(
    model,
    variables,
    _DATA.value,
    steps=_STEPS.value,
    batch=_BATCH.value,
    learning_rate=_LEARNING_RATE.value,
  )
  sam_finetune.save(model, tuned, _OUTPUT.value, like=_SAM.value)
  files.write_json(os.path.join(_OUTPUT.value, "finetune.json"), history)
  print(f"Wrote {_OUTPUT.value}: model.safetensors, config.json, finetune.json")


if __name__ == "__main__":
  cli.run(main)
