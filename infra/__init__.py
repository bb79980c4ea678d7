"""Local services, environment and S3 administration for running Diff-CXR."""
