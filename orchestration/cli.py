"""``diffcxr``: the command line, one subcommand group per stage, assembled from the services' own.

This module is the thin entry point: the config, storage and pipeline groups are its own; every other group
comes from ``services/<stage>/cli.py`` (``add_commands``), so a service's commands live with the service.
"""

from __future__ import annotations

import argparse

from diffcxr.cliargs import Groups, add_config_args, command, group, load, print_json, root_parser, run_cli
from services.data import cli as data_cli
from services.diffusion import cli as diffusion_cli
from services.eval import cli as eval_cli
from services.filter import cli as filter_cli
from services.register import cli as register_cli
from services.serve import cli as serve_cli
from services.text import cli as text_cli

CONFIG_GROUP = """list, show and explain configuration profiles"""

STORAGE_GROUP = """list and copy files by URI (local path or s3://)"""

PIPELINE_GROUP = """run the pipeline stages in this process (see also ray job submit)"""


def cmd_config_profiles(args: argparse.Namespace) -> int:
    """list the shipped profiles"""
    from diffcxr.config import available_profiles

    print("\n".join(available_profiles()))
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    """print the resolved configuration (profile + overrides), validated"""
    cfg = load(args)
    if args.json:
        print_json(cfg.to_dict())
    else:
        print(cfg.to_yaml(), end="")
    return 0


def cmd_config_keys(args: argparse.Namespace) -> int:
    """list every section.key with its meaning"""
    from diffcxr.config import describe_keys

    for section, keys in describe_keys().items():
        for key, text in keys.items():
            print(f"{section}.{key}" + (f"  -- {text}" if text else ""))
    return 0


def cmd_storage_ls(args: argparse.Namespace) -> int:
    """list files under a URI"""
    from diffcxr import storage

    load(args)
    for uri in storage.list_files(args.uri, recursive=args.recursive):
        print(uri)
    return 0


def cmd_storage_cp(args: argparse.Namespace) -> int:
    """copy one file between URIs"""
    from diffcxr import storage

    load(args)
    storage.copy(args.src, args.dst)
    print(f"copied {args.src} -> {args.dst}")
    return 0


def cmd_pipeline_run(args: argparse.Namespace) -> int:
    """run the stages in order, skipping those that are current"""
    from orchestration import full_pipeline

    forwarded = ["--config", args.profile, *sum((["--set", o] for o in args.overrides), [])]
    if args.only:
        forwarded += ["--only", args.only]
    if args.start:
        forwarded += ["--from", args.start]
    if args.stop:
        forwarded += ["--to", args.stop]
    if args.force:
        forwarded.append("--force")
    return full_pipeline.main(forwarded)


def add_config_commands(groups: Groups) -> None:
    sub = group(groups, "config", CONFIG_GROUP)
    p = command(sub, "profiles", cmd_config_profiles)
    p = command(sub, "show", cmd_config_show)
    add_config_args(p)
    p.add_argument("--json", action="store_true", help="JSON instead of YAML")
    p = command(sub, "keys", cmd_config_keys)


def add_storage_commands(groups: Groups) -> None:
    sub = group(groups, "storage", STORAGE_GROUP)
    p = command(sub, "ls", cmd_storage_ls)
    add_config_args(p)
    p.add_argument("uri")
    p.add_argument("-r", "--recursive", action="store_true")
    p = command(sub, "cp", cmd_storage_cp)
    add_config_args(p)
    p.add_argument("src")
    p.add_argument("dst")


def add_pipeline_commands(groups: Groups) -> None:
    sub = group(groups, "pipeline", PIPELINE_GROUP)
    p = command(sub, "run", cmd_pipeline_run)
    add_config_args(p)
    p.add_argument("--only", help="run just this stage")
    p.add_argument("--from", dest="start", help="start at this stage")
    p.add_argument("--to", dest="stop", help="stop after this stage")
    p.add_argument("--force", action="store_true", help="re-run the selected stages even if current")


#: The groups in the order ``diffcxr --help`` lists them: the pipeline's order, then the tools.
COMMANDS = (
    add_config_commands, data_cli.add_commands, filter_cli.add_commands, text_cli.add_commands,
    diffusion_cli.add_commands, serve_cli.add_commands, eval_cli.add_commands, register_cli.add_commands,
    add_storage_commands, add_pipeline_commands,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser, groups = root_parser(
        "diffcxr", "Diff-CXR: report-to-chest-X-ray generation. One subcommand group per pipeline stage."
    )
    for add in COMMANDS:
        add(groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
