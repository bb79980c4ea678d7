"""Where relative local paths point, and where the project's checkout is.

Relative paths resolve against the *project home*: ``$DIFFCXR_HOME``, else — inside a Ray job, whose driver
and workers run in a temporary copy of the working directory — the checkout this environment's diffcxr was
installed from (``pip install -e``) when that checkout exists on this machine, else the cwd. Without this,
``var/runs/...`` would be written into Ray's copy and deleted with it, and ``../shared`` (the assets beside
a checkout) would not be found by a plain ``ray job submit --working-dir .``.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse


@lru_cache(maxsize=1)
def installed_checkout() -> Path | None:
    """The checkout an editable install of diffcxr points to, when it exists on this machine (else None).

    The venv records it (``direct_url.json``), so a job running from Ray's copy can still find the user's
    checkout on a single-node cluster; on a node without it (a container image) this is None."""
    for dist in metadata.distributions(name="diffcxr"):
        text = dist.read_text("direct_url.json")
        if not text:
            continue
        info = json.loads(text)
        url = info.get("url", "")
        if info.get("dir_info", {}).get("editable") and url.startswith("file://"):
            path = Path(unquote(urlparse(url).path))
            if (path / "diffcxr").is_dir():
                return path
    return None


def in_ray_working_dir() -> bool:
    """True when the cwd is a Ray runtime-env copy of a job's working directory."""
    parts = Path.cwd().parts
    return "runtime_resources" in parts and "working_dir_files" in parts


def home() -> Path:
    env = os.environ.get("DIFFCXR_HOME")
    if env:
        return Path(env).absolute()
    if in_ray_working_dir() and installed_checkout() is not None:
        return installed_checkout()
    return Path.cwd().absolute()


def resolve_local(uri: str) -> str:
    """Absolute form of a relative local path; URIs with a scheme and absolute paths unchanged."""
    if "://" in uri or Path(uri).expanduser().is_absolute():
        return str(Path(uri).expanduser()) if "://" not in uri else uri
    return str(home() / uri)


def shared_dir(*parts: str) -> Path:
    """``../shared/<parts>`` beside the checkout: $DIFFCXR_HOME's, the installed checkout's, this package's, or
    the cwd's. The first existing candidate wins; when none exists the first one is returned so that error
    messages name the place a user would expect."""
    bases = [Path(p) for p in (os.environ.get("DIFFCXR_HOME"),) if p]
    bases += [b for b in (installed_checkout(),) if b is not None]
    bases += [Path(__file__).resolve().parents[1], Path.cwd()]
    candidates = list(dict.fromkeys(base.parent.joinpath("shared", *parts) for base in bases))
    return next((c for c in candidates if c.exists()), candidates[0])
