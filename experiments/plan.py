r"""Plans a recipe for an accelerator slice: the trainer's train and evaluation steps compiled for
the slice's devices (nothing runs), with memory per device against the HBM, FLOPs, the step's
compute, HBM, interconnect and input times and the one that bounds it, images/s, MFU and the hours
and chip-hours of the recipe's schedule.

  python experiments/plan.py --config=configs/deeplabv3_cityscapes.py --topology=v5e:4x8
  python experiments/plan.py --config=configs/hmsa_cityscapes.py --topology=v4:2x2x4 --fsdp=4
  python experiments/plan.py --config=configs/unet_microscopy.py --topology=v5e:2x2 --sweep
  python experiments/plan.py --table=plans/   # the Markdown table of the plans written there
  python experiments/plan.py --table=plans/ --topology=v5e:4x8   # ... of one slice
  python experiments/plan.py --refresh=plans/   # interconnect and input again, no compilation

Needs the TPU compiler (pip install -e '.[plan]'). Writes <output>/plan_<config>_<topology>.json.
"""

import glob
import json
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # compile for the slice; run nothing here

from absl import flags  # noqa: E402

from segjax import cli  # noqa: E402

_CONFIG = cli.config_flag(required=False)
_TOPOLOGY = flags.DEFINE_string(
  "topology", "v5e:4x8", "v5e:4x8, v4:2x2x4, v5p:2x2x2, v6e:4x8, h100:8, a100:8, ..."
)
_FSDP = flags.DEFINE_integer(
  "fsdp",
  None,
  "Devices over which parameters and optimizer state "
  "are split (default: the config's sharding.fsdp).",
)
_BATCH = flags.DEFINE_integer(
  "batch_size",
  None,
  "Global batch (default: the recipe's, raised to a multiple of the device count).",
)
_EVAL_SIZE = flags.DEFINE_list(
  "eval_size",
  None,
  "Height,width of evaluation images when the dataset's vary and data.eval_pp does not fix them.",
)
_INPUT_SIZE = flags.DEFINE_list(
  "input_size",
  None,
  "Height,width of the images the input plan "
  "decodes (default: the dataset's, or the training crop).",
)
_NO_EVAL = flags.DEFINE_bool("no_eval", False, "Plan the train step only.")
_SWEEP = flags.DEFINE_bool(
  "sweep",
  False,
  "Try batch per device 1, 2, 4, ... and fsdp 1, 2, 4, 8; report the largest that fits.",
)
_OUTPUT = flags.DEFINE_string("output", ".", "Directory for the JSON.")
flags.adopt_module_key_flags(cli)
_TABLE = flags.DEFINE_string(
  "table",
  None,
  "Instead of planning: print the Markdown table of the "
  "plan_*.json files in this directory (with --topology given: of that "
  "slice only).",
)
_REFRESH = flags.DEFINE_string(
  "refresh",
  None,
  "Instead of planning: make the communication and "
  "input parts of the plan_*.json files in this directory again "
  "(their recipes' configs/*.py, no compilation) and rewrite them.",
)


def main(argv):
  del argv
  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags
  from segjax import config_defaults
  from segjax import files
  from segjax import plan
  from segjax import plan_table

  if _REFRESH.value:
    for path in sorted(glob.glob(os.path.join(_REFRESH.value, "plan_*.json"))):
      result = json.load(open(path))
      name, _, argument = result["config"].partition(":")
      config_path = os.path.join(os.path.dirname(__file__), "..", "configs", f"{name}.py")
      config = config_defaults.load_config(config_path, argument or None)
      files.write_json(path, plan.refresh(result, config))
      print(plan_table.markdown_row(result))
    return
  if _TABLE.value:
    paths = sorted(glob.glob(os.path.join(_TABLE.value, "plan_*.json")))
    topology = _TOPOLOGY.value if flags.FLAGS["topology"].present else None
    print(plan_table.markdown_table([json.load(open(p)) for p in paths], topology=topology))
    return
  if _CONFIG.value is None:
    raise flags.ValidationError("--config is required.")
  # "configs/x.py:arg" (an argument of get_config) is the recipe "x:arg"
  path, _, argument = config_flags.get_config_filename(flags.FLAGS["config"]).partition(".py:")
  name = os.path.splitext(os.path.basename(path))[0] + (f":{argument}" if argument else "")
  try:
    if _SWEEP.value:
      result = plan.sweep(_CONFIG.value, _TOPOLOGY.value)
      best = result["best"]
      print(
        "largest that fits: "
        + (
          f"batch {best['batch_size']} ({best['batch_per_device']} per device), fsdp {best['fsdp']}"
          if best
          else "none"
        )
      )
    else:
      eval_size = tuple(int(v) for v in _EVAL_SIZE.value) if _EVAL_SIZE.value else None
      input_size = tuple(int(v) for v in _INPUT_SIZE.value) if _INPUT_SIZE.value else None
      start = time.perf_counter()
      stage = lambda message: print(f"[{time.perf_counter() - start:6.0f} s] {message}", flush=True)
      result = plan.plan(
        _CONFIG.value,
        _TOPOLOGY.value,
        fsdp=_FSDP.value,
        batch_size=_BATCH.value,
        eval_size=eval_size,
        with_eval=not _NO_EVAL.value,
        input_size=input_size,
        log=stage,
      )
      result["config"] = name
      print(plan_table.MARKDOWN_HEADER)
      print(plan_table.markdown_row(result))
      mesh = result["mesh"]
      print("Mesh: " + ", ".join(f"{a} {n} ({mesh['links'][a]})" for a, n in mesh["shape"].items()))
      if result["note"]:
        print(f"Note: {result['note']}")
  except plan.PlanError as e:
    raise SystemExit(f"error: {e}") from None
  os.makedirs(_OUTPUT.value, exist_ok=True)
  path = os.path.join(_OUTPUT.value, f"plan_{name}_{_TOPOLOGY.value}.json".replace(":", "_"))
  files.write_json(path, result)
  print(f"Wrote {path}")


if __name__ == "__main__":
  cli.run(main)
