"""Interactive segmentation: clicks give masks (`clicks`: the click protocol and NoC)."""

from segjax.interactive import clicks  # noqa: F401
