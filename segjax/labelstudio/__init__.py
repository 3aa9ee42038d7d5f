"""segjax and Label Studio: brush RLE (`rle`), labelling configs, pre-labels and exports (`tasks`),
the ML backend that closes the labelling loop (`backend`), and a local Label Studio (`server`).
See docs/labelling.md."""

from segjax.labelstudio.rle import decode
from segjax.labelstudio.rle import encode
from segjax.labelstudio.tasks import annotation_labels
from segjax.labelstudio.tasks import export_to_folder
from segjax.labelstudio.tasks import labelling_config
from segjax.labelstudio.tasks import prediction_result
