"""``python -m services.text train|embed ...``: the text service as a Ray job.

``ray job submit --working-dir . -- python -m services.text train --manifest s3://… --out s3://… --track``;
inside a job, Ray Train and Ray Data join the job's cluster.
"""

import sys

from diffcxr.cliargs import single_service_cli
from services.text.cli import add_commands

if __name__ == "__main__":
    raise SystemExit(single_service_cli("python -m services.text", add_commands, ["text", *sys.argv[1:]]))
