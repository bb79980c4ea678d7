"""What every service's subcommands share: the config flags, loading the config, ``--track``, JSON output,
and reading report files.

Each service contributes its own subcommands (``services/<stage>/cli.py``, an ``add_commands(groups)``);
the ``diffcxr`` entry point (:mod:`orchestration.cli`) assembles them, and a service's ``python -m`` entry
runs its own alone through :func:`run_cli`. Errors a user can fix are printed as one line naming the cause,
with exit status 2, never a stack trace; ``--log-level debug`` shows the details.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from diffcxr import __version__
from diffcxr.config import DiffCXRConfig
from diffcxr.errors import DiffCXRError

log = logging.getLogger("diffcxr")

#: ``groups.add_parser`` of the root parser: what a service's ``add_commands`` receives.
Groups = Any


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False, default=str))


def add_config_args(parser: argparse.ArgumentParser) -> None:
    from diffcxr.config import add_config_arguments

    add_config_arguments(parser)


def _help_and_description(doc: str) -> tuple[str, str | None]:
    """A docstring's first paragraph is the command's one-line help, the rest its ``--help`` description."""
    first, _, rest = inspect.cleandoc(doc).partition("\n\n")
    return " ".join(first.split()), " ".join(rest.split()) or None


def command(parent: Groups, name: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    """A subcommand ``name`` under ``parent`` that runs ``func``, documented by ``func``'s docstring, so a
    command's help and its code stay in one place."""
    help, description = _help_and_description(func.__doc__ or name)
    parser = parent.add_parser(name, help=help, description=description)
    parser.set_defaults(func=func)
    return parser


def group(groups: Groups, name: str, doc: str) -> Groups:
    """A subcommand group (``diffcxr NAME COMMAND``) documented by ``doc``; returns where its commands go."""
    help, description = _help_and_description(doc)
    parser = groups.add_parser(name, help=help, description=description)
    return parser.add_subparsers(dest="command", required=True, metavar="COMMAND")


def add_stage_flags(parser: argparse.ArgumentParser, track_help: str, force_help: str | None = None) -> None:
    """``--force`` and ``--track`` of a stage command, then the config flags."""
    parser.add_argument("--force", action="store_true", help=force_help or "re-run even if the stage is current")
    parser.add_argument("--track", action="store_true", help=track_help)
    add_config_args(parser)


def load(args: argparse.Namespace) -> DiffCXRConfig:
    """The validated config of ``--profile``/``--set``, with S3 configured from it."""
    from diffcxr.config import load_config
    from diffcxr.storage import configure_s3

    cfg = load_config(args.profile, args.overrides)
    configure_s3(cfg.storage.s3_endpoint, cfg.storage.s3_region)
    return cfg


def tracked(cfg: DiffCXRConfig, name: str, enabled: bool) -> tuple[Any, AbstractContextManager[Any]]:
    """(tracker, run context) when --track is given, else (None, a no-op context)."""
    if not enabled:
        return None, nullcontext()
    from diffcxr.tracking import Tracker

    tracker = Tracker.from_config(cfg)
    return tracker, tracker.run(name, tags={"diffcxr.stage": name, "diffcxr.profile": cfg.project.profile})


def read_report_lines(path: str) -> list[str]:
    """One report per line from a file ('-' = stdin), strictly UTF-8: a bad byte names its line."""
    from diffcxr.labeling.base import decode_report

    data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    reports = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        try:
            reports.append(decode_report(line.rstrip(b"\r")))
        except DiffCXRError as exc:
            raise DiffCXRError(f"{path}, line {number}: {exc}") from None
    if reports and not reports[-1]:
        reports.pop()  # the final newline
    return reports


def root_parser(prog: str, description: str) -> tuple[argparse.ArgumentParser, Groups]:
    """The parser every entry point starts from, and its subcommand groups."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"diffcxr {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser, parser.add_subparsers(dest="group", required=True, metavar="GROUP")


def run_cli(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse, run the chosen command; a :class:`DiffCXRError` becomes one line on stderr and status 2."""
    from diffcxr.env import apply_defaults

    apply_defaults()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except DiffCXRError as exc:
        log.debug("failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def single_service_cli(prog: str, add_commands: Callable[[Groups], None], argv: list[str]) -> int:
    """A service's ``python -m services.<stage>`` entry: the same commands as ``diffcxr``, that service's only."""
    parser, groups = root_parser(prog, f"{prog}: one Diff-CXR service's commands (see `diffcxr --help`).")
    add_commands(groups)
    return run_cli(parser, argv)
