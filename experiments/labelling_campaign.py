r"""How many pixels and clicks the labelling loop saves: a simulated annotator corrects the tiles
of a real frame that segjax's ML backend pre-labels, in the backend's order (least confident
first), by uncertainty per expected click, in a random order, or from scratch
(segjax/labelstudio/campaign.py; docs/labelling.md):

  pip download stardist==0.9.2 --no-deps -d /tmp/wheels     # ships a 2018 Data Science Bowl frame
  python experiments/labelling_campaign.py --source=/tmp/wheels/stardist-0.9.2-*.whl \
      --workdir=/tmp/segjax/campaign [--seeds=0,1,2 --rounds=5 --per_round=4] \
      [--click_config=configs/interactive_microscopy.py]

With ``--click_config`` a click model is trained on the frame's held-out half (mirrored, so that
it is the left half of `segjax.data.microscopy.write_regions`; in WORKDIR/clicks, resumed if
there; or give a trained one with ``--click_run``) and every corrected object is also corrected by
clicks: pre-labels + clicks, clicks only and painting disks, counted until IoU 0.90.

Writes WORKDIR/campaign.json, campaign.md (the tables) and campaign.png (IoU against pixels).
"""

from absl import flags

from segjax import cli

_CONFIG = cli.config_flag(default="configs/unet_microscopy.py:cpu")
_SOURCE = flags.DEFINE_string(
  "source", None, "The stardist wheel, or a folder with img2d.tif and mask2d.tif."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the tiles, runs and results.")
_TILE = flags.DEFINE_integer("tile", 64, "Tile side in pixels.")
_INITIAL = flags.DEFINE_integer("initial", 2, "Tiles labelled from scratch before the first model.")
_PER_ROUND = flags.DEFINE_integer("per_round", 4, "Tiles corrected per round.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Rounds of correction and fine-tuning.")
_INITIAL_STEPS = flags.DEFINE_integer("initial_steps", 300, "Training steps of the first model.")
_STEPS = flags.DEFINE_integer("steps", 150, "Fine-tuning steps per round.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (initial tiles, random order, init).")
_ORDERS = flags.DEFINE_list(
  "orders", ["uncertainty", "gain_per_click", "random"], "Orders to run ('random' among them)."
)
_CLICK_CONFIG = cli.config_flag(
  "click_config", "A click model's config to train on the held-out half (counts clicks).", False
)
_CLICK_RUN = flags.DEFINE_string("click_run", None, "A trained click model's run (counts clicks).")
_CLICK_RADIUS = flags.DEFINE_integer("click_radius", 3, "Radius in pixels of a painted disk.")
flags.mark_flags_as_required(["source", "workdir"])
flags.adopt_module_key_flags(cli)


def main(argv):
  del argv
  # pylint: disable=import-outside-toplevel
  import os
  from segjax.data import microscopy
  from segjax.labelstudio import campaign

  image, instances = microscopy.read_frame(_SOURCE.value)
  workdir = os.path.abspath(_WORKDIR.value)
  click_run = _CLICK_RUN.value
  if _CLICK_CONFIG.value is not None and not click_run:
    from segjax.interactive import training

    click_run, metrics = training.train_on_frame(
      _CLICK_CONFIG.value, os.path.join(workdir, "clicks"), image[:, ::-1], instances[:, ::-1]
    )
    print(f"click model {click_run}: on the pool half NoC@90 {metrics['noc90']:.2f}", flush=True)
  campaign.run(
    _CONFIG.value,
    image,
    instances,
    workdir,
    tile=_TILE.value,
    initial=_INITIAL.value,
    per_round=_PER_ROUND.value,
    rounds=_ROUNDS.value,
    initial_steps=_INITIAL_STEPS.value,
    steps=_STEPS.value,
    seeds=[int(s) for s in _SEEDS.value],
    orders=tuple(_ORDERS.value),
    click_run=click_run,
    click_radius=_CLICK_RADIUS.value,
    log=lambda m: print(m, flush=True),
  )
  with open(os.path.join(workdir, "campaign.md"), encoding="utf-8") as f:
    print(f.read())


if __name__ == "__main__":
  cli.run(main)
