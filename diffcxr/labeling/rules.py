"""A rule-based CheXpert-style labeler: no weights, transparent, linear in the report length.

For every sentence (long ones cut into bounded pieces, so time is linear in the
text length) each mention of an observation gets a state from the cues around
it, in this order:

1. a negation inside the mention itself ("heart is *not* enlarged") → negative;
2. a double-negative uncertainty ("cannot exclude", "not ruled out") → uncertain;
3. a negation cue earlier in its scope ("no", "without", "free of", "resolved"),
   "no change in X" and "not without X" excepted → negative; or a negation right after it
   ("... is not seen", "... has resolved") → negative;
4. a historical cue just before it ("history of", "status post", "prior") →
   ignored, except for devices and fractures, which stay visible;
5. an uncertainty cue ("possible", "may", "suggestive of", "versus", "X or Y") → uncertain;
6. otherwise positive.

A scope ends at ";", "but", "however", ", the", "and there" and similar (see
``vocabulary.SCOPE_BREAK``), which is how "no effusion, pneumothorax or
consolidation" negates all three while "no effusion; the heart is enlarged"
does not negate the heart. Per report, positive beats uncertain beats negative
(the CheXpert aggregation). "No Finding" follows the CheXpert convention: 1 when
no pathology (all but Support Devices) is positive or uncertain and the report
states something; otherwise null.

What it cannot do: it reads words, not meaning. Comparisons with unstated
priors, spelling errors outside the listed variants, and findings named only
by their cause are missed. ``docs/LABELER.md`` measures it against IU-Xray's
MeSH annotations.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from diffcxr.constants import CHEXPERT_LABELS
from diffcxr.labeling import vocabulary as v
from diffcxr.labeling.base import ReportLabels

VERSION = "rules-v1"
MAX_PIECE = 400  # characters; long sentences are cut at whitespace into pieces at most this long
_SENTENCE_SPLIT = re.compile(r"(?<!\d)[.!?](?=\s|$)|(?<=\d)\.(?=\s+\D)|\n+")
_INNER_NEGATION = re.compile(r"\b(?:not|no|without)\b")
_OR_BEFORE = re.compile(r"\bor\s+(?:\S+\s+){0,2}$")
_HISTORY_REACH = 40  # characters before a mention in which a historical cue applies
_PATHOLOGIES = tuple(n for n in CHEXPERT_LABELS if n not in ("No Finding", "Support Devices"))

POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1
_RANK = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}


def normalise(text: str) -> str:
    return " ".join(text.lower().replace("’", "'").split())


def pieces(text: str) -> Iterator[str]:
    """Sentences of a normalised text, each at most ``MAX_PIECE`` characters."""
    for sentence in _SENTENCE_SPLIT.split(text):
        sentence = sentence.strip(" ,")
        while len(sentence) > MAX_PIECE:
            cut = sentence.rfind(" ", 0, MAX_PIECE)
            cut = cut if cut > 0 else MAX_PIECE
            yield sentence[:cut]
            sentence = sentence[cut:].strip()
        if sentence:
            yield sentence


def _scope_start(before: str) -> int:
    last = 0
    for match in v.SCOPE_BREAK.finditer(before):
        last = match.end()
    return last


def _scope_end(after: str) -> int:
    match = v.SCOPE_BREAK.search(after)
    return match.start() if match else len(after)


def mention_state(sentence: str, start: int, end: int, keeps_history: bool) -> int | None:
    """State of the mention ``sentence[start:end]``: 1, 0, -1, or None when it is historical.

    ``keeps_history``: the mention stays current after "history of" / "status post" cues.
    """
    span = sentence[start:end]
    before_all = sentence[:start]
    scope = before_all[_scope_start(before_all) :]
    after = sentence[end:]
    near_after = after[: _scope_end(after)][:60]
    if _INNER_NEGATION.search(span):
        return NEGATIVE
    if v.DOUBLE_NEGATIVE_UNCERTAIN.search(scope) or v.DOUBLE_NEGATIVE_UNCERTAIN.search(near_after):
        return UNCERTAIN
    cleaned = v.NOT_NEGATING.sub(" ", scope)
    if v.PRE_NEGATION.search(cleaned) or v.POST_NEGATION.match(after):
        return NEGATIVE
    if not keeps_history and (v.HISTORY.search(scope[-_HISTORY_REACH:]) or v.HISTORY_ADJACENT.search(scope)):
        return None
    if (
        v.PRE_UNCERTAINTY.search(cleaned)
        or v.PRE_UNCERTAINTY.search(span)
        or v.POST_UNCERTAINTY.match(after)
        or _OR_BEFORE.search(scope)
    ):
        return UNCERTAIN
    return POSITIVE


def _details(sentence: str, start: int, end: int) -> dict[str, str | None]:
    """Laterality and severity words nearest to a positive mention, within its scope."""
    before_all = sentence[:start]
    lo = _scope_start(before_all)
    hi = end + _scope_end(sentence[end:])
    window = sentence[lo:hi]
    centre = (start + end) / 2 - lo

    def nearest(pattern: re.Pattern[str]) -> list[re.Match[str]]:
        return sorted(pattern.finditer(window), key=lambda m: abs((m.start() + m.end()) / 2 - centre))

    sides = [m.group(0) for m in nearest(v.LATERALITY)]
    laterality = None
    if sides:
        first = sides[0]
        both_sides = first.startswith(("bi", "both")) or {"left", "right"} <= set(sides[:2])
        laterality = "bilateral" if both_sides else first
    severities = nearest(v.SEVERITY)
    severity = v.SEVERITY_WORDS[severities[0].group(0)] if severities else None
    return {"laterality": laterality, "severity": severity}


def _overlaps(span: tuple[int, int], blocked: list[tuple[int, int]]) -> bool:
    return any(span[0] < b_end and b_start < span[1] for b_start, b_end in blocked)


class RuleLabeler:
    """The default labeler. Stateless and thread-safe; about 4,000 reports per second on one core."""

    name = VERSION

    def label_text(self, text: str | None) -> ReportLabels:
        """Labels of one report's text (findings + impression). Empty or garbage text → all null."""
        states: dict[str, int] = {}
        details: dict[str, dict[str, str | None]] = {}
        stated_anything = False
        for sentence in pieces(normalise(text or "")):
            if v.NORMAL_REPORT.search(sentence):
                stated_anything = True
            for obs in v.OBSERVATIONS:
                blocked = [m.span() for m in obs.exclusions.finditer(sentence)] if obs.exclusions else []
                for match in obs.mentions.finditer(sentence):
                    if _overlaps(match.span(), blocked):
                        continue
                    keeps = obs.keeps_history or bool(obs.history_exempt and obs.history_exempt.match(match.group(0)))
                    state = mention_state(sentence, match.start(), match.end(), keeps)
                    if state is None:
                        continue
                    stated_anything = True
                    if _RANK[state] > _RANK.get(states.get(obs.name), 0):
                        states[obs.name] = state
                        if state == POSITIVE:
                            details[obs.name] = _details(sentence, match.start(), match.end())
                    elif state == POSITIVE and obs.name in details:
                        for key, value in _details(sentence, match.start(), match.end()).items():
                            details[obs.name][key] = details[obs.name][key] or value
                if obs.normal is not None and obs.name not in states and obs.normal.search(sentence):
                    states[obs.name] = NEGATIVE
                    stated_anything = True
        labels: dict[str, int | None] = {name: states.get(name) for name in CHEXPERT_LABELS}
        if stated_anything and not any(labels[n] in (POSITIVE, UNCERTAIN) for n in _PATHOLOGIES):
            labels["No Finding"] = POSITIVE
        return ReportLabels(labels, {k: d for k, d in details.items() if labels.get(k) == POSITIVE})

    def label_reports(self, report_ids: Sequence[str | None], texts: Sequence[str | None]) -> list[ReportLabels | None]:
        return [self.label_text(text) for text in texts]
