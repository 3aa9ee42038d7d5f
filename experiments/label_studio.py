r"""Label Studio with a trained run, in one command each (docs/labelling.md):

python experiments/label_studio.py start --workdir=RUN --images=FOLDER [--port=8080]
    a local Label Studio (installed once into its own environment) with a project for the run's
    classes over FOLDER, segjax's ML backend connected, pre-labels for every image; prints the
    URL and login, runs until Ctrl-C, then stops everything it started
python experiments/label_studio.py import --workdir=RUN --images=FOLDER --output=tasks.json
    pre-labels as Label Studio tasks to import (image URLs under --document_root)
python experiments/label_studio.py export --workdir=RUN --input=export.json --output=DATA/train
    a JSON export (or --url and --project of a running Label Studio) as a folder-dataset split
"""

from absl import flags

from segjax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run.")
_IMAGES = flags.DEFINE_string("images", None, "start/import: the folder of images to annotate.")
_PORT = flags.DEFINE_integer("port", 8080, "start: Label Studio's port.")
_BACKEND_PORT = flags.DEFINE_integer("backend_port", 9090, "start: the ML backend's port.")
_STEPS = flags.DEFINE_integer("steps", 200, "start: steps of each fine-tuning.")
_TRAIN_EVERY = flags.DEFINE_integer(
  "train_every", 0, "start: fine-tune after this many new annotations (0: on Start Training only)."
)
_DOCUMENT_ROOT = flags.DEFINE_string(
  "document_root",
  None,
  "import/export: Label Studio's local files root (default: the parent of --images).",
)
_INTERACTIVE = flags.DEFINE_string(
  "interactive",
  None,
  "start: clicks and boxes give masks (smart tools), by a click model's run or a SAM checkpoint.",
)
_INPUT = flags.DEFINE_string("input", None, "export: a Label Studio JSON export file.")
_URL = flags.DEFINE_string("url", None, "export: a running Label Studio (with --project, --token).")
_PROJECT = flags.DEFINE_integer("project", None, "export: the project id.")
_TOKEN = flags.DEFINE_string("token", None, "export: an API token (default: start's).")
_ANNOTATOR = flags.DEFINE_string(
  "annotator",
  None,
  "export: this annotator's (id or e-mail) annotations only (default: each task's latest).",
)
_OUTPUT = flags.DEFINE_string("output", None, "import: the tasks file; export: the split folder.")
flags.mark_flags_as_required(["workdir"])
flags.adopt_module_key_flags(cli)


def main(argv):
  from segjax.labelstudio import session  # pylint: disable=import-outside-toplevel

  if argv[1] == "start":
    with session.Session(
      _WORKDIR.value,
      _IMAGES.value,
      port=_PORT.value,
      backend_port=_BACKEND_PORT.value,
      steps=_STEPS.value,
      train_every=_TRAIN_EVERY.value,
      interactive=_INTERACTIVE.value,
    ) as labelling:
      print(session.welcome(labelling), flush=True)
      labelling.wait()
    return
  if argv[1] == "import":
    count = session.import_prelabels(
      _WORKDIR.value, _IMAGES.value, _OUTPUT.value, _DOCUMENT_ROOT.value
    )
    print(f"Wrote {count} tasks with pre-labels to {_OUTPUT.value}")
    return
  written = session.export_annotations(
    _WORKDIR.value,
    _OUTPUT.value,
    path=_INPUT.value,
    url=_URL.value,
    project=_PROJECT.value,
    token=_TOKEN.value,
    document_root=_DOCUMENT_ROOT.value,
    annotator=_ANNOTATOR.value,
  )
  print(f"Wrote {len(written)} annotated images to {_OUTPUT.value}")


if __name__ == "__main__":
  cli.run(main, commands=("start", "import", "export"))
