"""Report-conditioned chest radiograph phantoms: the benchmark with known ground truth."""
