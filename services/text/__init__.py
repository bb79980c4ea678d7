"""Text service: the CLIP-style report encoder and its information squeeze (AVA-TLS).

``encoder`` builds the towers through open_clip, ``squeeze`` is the Conv1d
module, ``model`` joins them (and saves/loads bundles), ``train`` runs the
contrastive training on Ray Train, ``embed`` writes the embeddings the denoiser
trains on through Ray Data, ``stage`` is the pipeline stage. See docs/TEXT.md.
"""

from diffcxr.exports import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "TextPart": "part",
        "TextResult": "part",
        "ReportEncoder": "model",
    },
)
