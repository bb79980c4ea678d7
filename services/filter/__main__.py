"""``python -m services.filter --manifest URI --out URI [-p PROFILE] [--set K=V]``: the filter as a Ray job.

Submit it on its own with
``ray job submit --working-dir . -- python -m services.filter --manifest s3://… --out s3://…``;
inside a job, Ray Data joins the job's cluster.
"""

import sys

from diffcxr.cliargs import single_service_cli
from services.filter.cli import add_commands

if __name__ == "__main__":
    raise SystemExit(single_service_cli("python -m services.filter", add_commands, ["filter", *sys.argv[1:]]))
