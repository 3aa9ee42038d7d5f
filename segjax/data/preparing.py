"""Preparing a tfds builder from local data: tfds's download messages ("Downloading and preparing
dataset Unknown size ...") and progress bars say nothing useful when nothing is downloaded, so
they are replaced by one line before and one after."""

import contextlib
import io


def prepare_quietly(builder, what: str = ""):
  """``builder.download_and_prepare()`` with a line saying what is prepared and where; returns
  the builder (at once, and silently, when it is prepared already). tfds's own output is shown
  only if preparation fails."""
  if builder.is_prepared():
    return builder
  from segjax import run_log  # pylint: disable=import-outside-toplevel

  run_log.info("Preparing %s once in %s ...", what or builder.name, builder.data_dir)
  captured = io.StringIO()
  try:
    with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
      builder.download_and_prepare()
  except Exception:
    print(captured.getvalue()[-4000:])
    raise
  return builder
