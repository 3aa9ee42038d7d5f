r"""Evaluates a trained model as config.evals says (else on config.eval_splits); writes
<workdir>/eval_metrics.json, keyed by evaluation name.

  python experiments/evaluate.py --workdir=/tmp/segjax/unet [--step=1500]
  python experiments/evaluate.py --model=unet.safetensors --config=configs/unet_shapes.py

The model, its classes and its normalisation come from the run directory (or the exported file);
an optional --config (with --config.<key>=... overrides) supplies where the data lies and how to
evaluate (config.evals, config.inference, config.postprocess, eval_splits, eval_batch_size,
data.root).
"""

import os

from absl import flags

from segjax import cli
from segjax import files

_CONFIG = cli.config_flag(
  help_text="Optional config file: evaluation and data-location settings "
  "(--config.<key>=... overrides them).",
  required=False,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's directory.")
_MODEL = flags.DEFINE_string("model", None, "Or: a model exported by experiments/export.py.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest).")
flags.mark_flags_as_mutual_exclusive(["workdir", "model"], required=True)
cli.define_distributed_flags()
flags.adopt_module_key_flags(cli)  # --config, --verbose, --show_config, --distributed... in --help


def main(argv):
  del argv
  cli.start_distributed()
  # pylint: disable=import-outside-toplevel
  import jax
  from segjax import evaluation
  from segjax import run_log

  results = evaluation.evaluate_run(_WORKDIR.value or _MODEL.value, _CONFIG.value, _STEP.value)
  for name, summary in results.items():
    run_log.info("%s: %s", name, evaluation.format_summary(summary))
  if jax.process_index() == 0 and _WORKDIR.value:
    path = os.path.join(os.path.abspath(_WORKDIR.value), "eval_metrics.json")
    files.write_json(path, results)
    print(f"Wrote {path}")


if __name__ == "__main__":
  cli.run(main)
