"""Text service: BiomedCLIP-style encoder and the information squeeze on Ray Train.

Not built yet: tracked in issue #6. The CLI group `diffcxr text` and the pipeline
stage of the same name say so instead of pretending to run.
"""
