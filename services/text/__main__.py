"""``python -m services.text train|embed ...``: the text service as a Ray job.

``ray job submit --working-dir . -- python -m services.text train --manifest s3://… --out s3://… --track``;
inside a job, Ray Train and Ray Data join the job's cluster.
"""

import sys

from diffcxr.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["text", *sys.argv[1:]]))
