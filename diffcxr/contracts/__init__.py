"""Stage contracts: the files one stage writes and another reads, and the one reader of each.

| contract | written by | read by | reader |
|---|---|---|---|
| manifest (Parquet, one row per image) | data, filter | every stage | :mod:`diffcxr.manifest` |
| images (any common format, by URI) | data | filter, text, eval | :mod:`diffcxr.contracts.images` |
| latents (Parquet shards) | filter | diffusion | :mod:`diffcxr.contracts.latents` |
| embeddings (Parquet + ``unconditional.npy``) | text | diffusion | :mod:`diffcxr.contracts.embeddings` |
| generator bundle (``generator.json`` + parts) | diffusion | serve, eval, register | :mod:`diffcxr.bundle` |

A reader lives here, in the core, so a consumer never imports its producer's service.
"""
