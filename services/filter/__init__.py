"""Filter service: Latent Noise Filtering (LNFS) on Ray Data.

Not built yet: tracked in issue #5. The CLI group `diffcxr filter` and the pipeline
stage of the same name say so instead of pretending to run.
"""
