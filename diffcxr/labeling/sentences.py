"""Disease sentences for the disease-knowledge adapter: labels → "There is atelectasis. There is edema."

Diseases are taken by *name* from the labels and written in the fixed order of
``EVAL_DISEASES`` (the paper's 11), never by column position. The paper counts
only positive findings; ``uncertain_policy`` decides what an uncertain (-1)
finding does:

* ``ignore`` (default, the paper): uncertain findings are left out;
* ``positive``: uncertain findings are written like positives (the "U-Ones" policy of CheXpert).
"""

from __future__ import annotations

from collections.abc import Mapping

from diffcxr.constants import EVAL_DISEASES
from diffcxr.errors import ConfigError

UNCERTAIN_POLICIES: tuple[str, ...] = ("ignore", "positive")
NO_FINDING_SENTENCE = "There is no finding."


def disease_sentence(labels: Mapping[str, int | None], uncertain_policy: str = "ignore") -> str:
    """The adapter's hint sentence for one report's labels."""
    if uncertain_policy not in UNCERTAIN_POLICIES:
        raise ConfigError(f"uncertain_policy '{uncertain_policy}' is not one of {', '.join(UNCERTAIN_POLICIES)}")
    wanted = {1, -1} if uncertain_policy == "positive" else {1}
    found = [name for name in EVAL_DISEASES if labels.get(name) in wanted]
    if not found:
        return NO_FINDING_SENTENCE
    return " ".join(f"There is {name.lower()}." for name in found)
