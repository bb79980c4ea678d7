"""Data stage: every supported dataset → one manifest (see ``diffcxr.manifest``)."""

from diffcxr.exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {"render_phantom": "phantom.render:render"})
