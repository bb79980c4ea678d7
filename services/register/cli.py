"""``diffcxr promote``: move a registry alias by hand, with the reason."""

from __future__ import annotations

import argparse

from diffcxr.cliargs import Groups, add_config_args, command, load, print_json


def cmd_promote(args: argparse.Namespace) -> int:
    """move a registry alias by hand (a rollback or an override of the promotion gate), with the reason

    Give VERSION of the generator the champion alias (or --alias), and, for the champion, the parts it was built
    from (text model, U-ViT, adapter, as recorded by the register stage). The reason is stored on the version like
    the gate's. The pipeline's register stage is the normal way in (docs/ORCHESTRATION.md)."""
    from diffcxr.tracking import Tracker
    from services.register.stage import promote_manually

    cfg = load(args)
    alias = args.alias or cfg.tracking.alias
    record = promote_manually(Tracker.from_config(cfg), args.name, args.version, alias, args.reason, cfg.tracking.alias)
    print_json(record)


def add_commands(groups: Groups) -> None:
    """This service's subcommands on the root parser's ``groups``."""
    p = command(groups, "promote", cmd_promote)
    p.add_argument("--version", type=int, required=True, help="registry version to promote")
    p.add_argument("--reason", required=True, help="why (stored on the model version)")
    p.add_argument("--alias", help="alias to move (default: tracking.alias, i.e. champion)")
    p.add_argument("--name", default="diffcxr-generator", help="registered model name (default: diffcxr-generator)")
    add_config_args(p)
