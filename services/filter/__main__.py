"""``python -m services.filter --manifest URI --out URI [-p PROFILE] [--set K=V]``: the filter as a Ray job.

Submit it on its own with
``ray job submit --working-dir . -- python -m services.filter --manifest s3://… --out s3://…``;
inside a job, Ray Data joins the job's cluster.
"""

import sys

from diffcxr.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["filter", *sys.argv[1:]]))
