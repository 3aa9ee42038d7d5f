"""Interactive segmentation: clicks give masks.

`clicks`: the click protocol, NoC and the mean IoU after k clicks; `training`: RITM's click
simulation for click models (``config.step_inputs = "iterative_clicks(...)"``); `predictor`: a
click model's run or Segment Anything answering clicks and boxes on image files (Label Studio's
smart tools); `sam_finetune`: SAM's mask decoder fine-tuned on a folder with simulated clicks.
"""

from segjax.interactive import clicks  # noqa: F401
