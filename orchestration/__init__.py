"""The end-to-end pipeline (``full_pipeline.py``), run as a Ray job or in-process."""
