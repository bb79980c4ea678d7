"""Where relative local paths point: ``$DIFFCXR_HOME`` (the project checkout) or the cwd.

A Ray job runs its driver inside a temporary copy of the working directory;
without this, ``var/runs/...`` would be written there and deleted with it.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("DIFFCXR_HOME") or os.getcwd()).absolute()


def resolve_local(uri: str) -> str:
    """Absolute form of a relative local path; URIs with a scheme and absolute paths unchanged."""
    if "://" in uri or Path(uri).expanduser().is_absolute():
        return str(Path(uri).expanduser()) if "://" not in uri else uri
    return str(home() / uri)


def shared_dir(*parts: str) -> Path:
    """``../shared/<parts>`` beside the checkout ($DIFFCXR_HOME, this package's checkout, or the cwd).

    The first existing candidate wins; when none exists the first one is returned
    so that error messages name the place a user would expect.
    """
    bases = [Path(p) for p in (os.environ.get("DIFFCXR_HOME"),) if p]
    bases += [Path(__file__).resolve().parents[1], Path.cwd()]
    candidates = [base.parent.joinpath("shared", *parts) for base in bases]
    return next((c for c in candidates if c.exists()), candidates[0])
