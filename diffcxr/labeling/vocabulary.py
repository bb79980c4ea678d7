"""What the rule labeler looks for: mention patterns per CheXpert observation, and the cues around them.

All patterns run on lower-cased text. They are written to be read and extended
by a radiologist, one list per observation, in the spirit of the CheXpert
labeler's phrase lists (no code or text of it is reused). Each observation has
``mentions`` (a finding is being talked about) and ``normal`` (a phrase that
states the finding is absent, e.g. "heart size is normal" for Cardiomegaly).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


def _rx(*alternatives: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")\b")


_GAP = r"(?:[\w/-]+\s+){0,4}?"  # up to four words between a subject and its predicate
_HEART = r"(?:heart|cardiac silhouette|cardiac shadow|cardiac contours?|cardiac size|heart size|cardiac)"
_MEDIASTINUM = (
    r"(?:mediastinum|mediastinal (?:silhouette|contours?|shadow)|cardiomediastinal (?:silhouette|contours?|shadow)"
    r"|superior mediastinum)"
)
_NORMAL = r"(?:normal|within normal limits|unremarkable|not enlarged|upper limits? of normal|top normal)"


@dataclass(frozen=True)
class Observation:
    """One CheXpert observation: how it is mentioned, and how its absence is stated."""

    name: str
    mentions: re.Pattern[str]
    normal: re.Pattern[str] | None = None
    #: Mentions after "history of" / "status post" still count (devices and old fractures are visible).
    keeps_history: bool = False
    exclusions: re.Pattern[str] | None = None  # spans that look like a mention but are not (e.g. "mass effect")
    #: Mentions matching this stay current after a historical cue ("prior granulomatous disease" is visible).
    history_exempt: re.Pattern[str] | None = None


OBSERVATIONS: tuple[Observation, ...] = (
    Observation(
        "Atelectasis",
        _rx(r"atelecta\w*", r"collapsed?", r"volume loss"),
    ),
    Observation(
        "Cardiomegaly",
        _rx(
            r"cardiomegaly",
            r"cardiac enlargement",
            r"enlarged (?:heart|cardiac (?:silhouette|shadow|size|contours?))",
            r"enlargement of the (?:heart|cardiac silhouette)",
            rf"{_HEART}\s+{_GAP}(?:is|are|appears?|remains?|seems?)\s+{_GAP}(?:enlarged|large|prominent|increased)",
            rf"{_HEART} (?:size )?(?:is )?(?:enlarged|enlargement)",
            r"(?:large|prominent|increased) (?:heart|cardiac silhouette|heart size|cardiac size)",
        ),
        normal=_rx(
            rf"{_HEART}\s+{_GAP}(?:is\s+|are\s+|appears?\s+|remains?\s+)?{_NORMAL}",
            r"normal (?:heart|cardiac) (?:size|silhouette)",
            r"normal(?:-sized| sized) heart",
            r"heart (?:is )?(?:normal|within normal limits) in size",
            r"(?:normal|stable) (?:cardio)?mediastinal (?:silhouette|contours?)",
            r"(?:cardiomediastinal|cardiac and mediastinal) (?:silhouette|contours?) (?:is |are |appears? )?" + _NORMAL,
            r"heart and mediastinum (?:are )?(?:normal|unremarkable|within normal limits)",
        ),
    ),
    Observation(
        "Consolidation",
        _rx(r"consolidat\w*"),
    ),
    Observation(
        "Edema",
        _rx(
            r"edema",
            r"oedema",
            r"(?:pulmonary |vascular |venous |interstitial )*congestion",
            r"congestive heart failure",
            r"chf",
            r"heart failure",
            r"fluid overload",
            r"cephalization",
            r"kerley (?:b )?lines",
        ),
        exclusions=_rx(r"nasal congestion", r"(?:soft tissue|subcutaneous|extremity|leg) edema"),
    ),
    Observation(
        "Enlarged Cardiomediastinum",
        _rx(
            r"widened mediastinum",
            r"mediastinal widening",
            r"widening of the mediastinum",
            r"enlarged (?:cardio)?mediastin\w+(?: silhouette| contours?)?",
            rf"{_MEDIASTINUM}\s+{_GAP}(?:is|are|appears?|remains?)\s+{_GAP}(?:widened|wide|enlarged|prominent)",
            r"mediastinal (?:mass|lymphadenopathy|adenopathy)",
        ),
        normal=_rx(
            rf"{_MEDIASTINUM}\s+{_GAP}(?:is\s+|are\s+|appears?\s+|remains?\s+)?{_NORMAL}",
            r"(?:normal|stable) (?:cardio)?mediastinal (?:silhouette|contours?)",
            r"heart and mediastinum (?:are )?(?:normal|unremarkable|within normal limits)",
            r"mediastinum (?:is )?(?:normal|within normal limits) in (?:size|width)",
        ),
    ),
    Observation(
        "Fracture",
        _rx(r"fractures?", r"fractured", r"fx", r"broken (?:rib|bone)s?"),
        keeps_history=True,
    ),
    Observation(
        "Lung Lesion",
        _rx(
            r"nodules?",
            r"nodular (?:opacity|opacities|density|densities|lesions?)",
            r"masse?s?",
            r"(?:lung|pulmonary|cavitary|cavitating|parenchymal|spiculated) lesions?",
            r"lesions?",
            r"tumou?rs?",
            r"neoplasms?",
            r"carcinoma",
            r"malignan(?:cy|t)",
            r"metasta\w+",
            r"granulomas?",
            r"granulomata",
            r"granulomatous",
        ),
        exclusions=_rx(
            r"mass effect",
            r"soft tissue mass",
            r"body mass",
            r"bone mass",
            r"(?:osseous|lytic|sclerotic|bone|bony) lesions?",
        ),
        history_exempt=_rx(r"granulom\w*"),
    ),
    Observation(
        "Lung Opacity",
        _rx(
            r"opacit(?:y|ies)",
            r"opacification",
            r"opacified",
            r"infiltrat(?:e|es|ion|ive)",
            r"air ?space (?:disease|process)",
            r"ground[- ]glass",
            r"(?:patchy|focal|hazy|airspace|parenchymal|basilar|lung|pulmonary|retrocardiac|linear|streaky|increased)"
            r" densit(?:y|ies)",
            r"haziness",
            r"hazy",
            r"interstitial (?:disease|opacities|prominence|thickening)",
            r"reticular (?:opacities|markings|pattern)",
        ),
    ),
    Observation(
        "Pleural Effusion",
        _rx(
            r"(?:pleural )?effusions?",
            r"pleural fluid",
            r"hydrothorax",
            r"hydropneumothorax",
            r"blunt\w* (?:of )?(?:the )?(?:left |right |bilateral |both )?(?:lateral |posterior )?costophrenic",
            r"costophrenic (?:angles? |sulcus |sulci )?(?:is |are )?blunt\w*",
            r"fluid (?:in|within) the (?:pleural space|fissure)",
        ),
        normal=_rx(r"costophrenic (?:angles?|sulci|sulcus) (?:is |are )?(?:sharp|clear|preserved|normal)"),
        exclusions=_rx(r"pericardial effusions?", r"joint effusions?"),
    ),
    Observation(
        "Pleural Other",
        _rx(
            r"pleural (?:thickening|plaques?|calcifications?|scarring|fibrosis)",
            r"pleural[- ]parenchymal (?:scarring|thickening)",
            r"fibrothorax",
            r"pleural-based (?:thickening|density|opacity)",
        ),
    ),
    Observation(
        "Pneumonia",
        _rx(
            r"pneumonias?",
            r"pneumonitis",
            r"bronchopneumonia",
            r"pneumonic",
            r"infectio(?:n|us)(?: process)?",
            r"infected",
        ),
    ),
    Observation(
        "Pneumothorax",
        _rx(r"pneumothora(?:x|ces)", r"ptx", r"hydropneumothorax", r"air in the pleural space"),
    ),
    Observation(
        "Support Devices",
        _rx(
            r"(?:endotracheal|et|nasogastric|ng|og|orogastric|feeding|chest|tracheostomy|dobhoff|enteric|gastric)"
            r" tubes?",
            r"(?:central venous|central|venous|picc|midline|jugular|subclavian|arterial|dialysis|swan[- ]ganz)"
            r" (?:lines?|catheters?)",
            r"catheters?",
            r"picc",
            r"port-?a-?cath",
            r"(?:chest|power|infusion) ports?",
            r"pacemakers?",
            r"pacers?",
            r"(?:aicd|icd)",
            r"defibrillators?",
            r"(?:pacemaker|pacer|cardiac|transvenous) leads?",
            r"sternotomy",
            r"sternal (?:wires|sutures)",
            r"(?:surgical|vascular|metallic) clips?",
            r"clips?",
            r"stents?",
            r"(?:valve replacement|prosthetic valve|valve prosthesis)",
            r"(?:orthopedic |surgical |fixation |spinal )?hardware",
            r"drains?",
            r"tracheostomy",
            r"(?:monitoring|ecg|ekg) (?:leads|electrodes|wires)",
            r"intra-?aortic balloon pump",
            r"loop recorder",
        ),
        keeps_history=True,
    ),
)

OBSERVATION_BY_NAME: dict[str, Observation] = {o.name: o for o in OBSERVATIONS}

# ---------------------------------------------------------------------------------------------- cues
#: Uncertainty phrases that contain a negation word: matched (and masked) before any negation cue.
DOUBLE_NEGATIVE_UNCERTAIN = re.compile(
    r"\b(?:can ?not|can't|could not|couldn't|may not|not) (?:be )?(?:entirely |completely |definitely |totally )?"
    r"(?:excluded?|ruled? out|rule out)\b"
    r"|\bnot (?:entirely |completely )?(?:excluded|ruled out)\b"
    r"|\bno (?:definite|significant )?change\b.{0,20}?\b(?:versus|vs)\b"
)

#: Phrases with a negation word that do not negate what follows: "no change in X", "no interval
#: change of X" describe a present X; "not without X" is a double negative.
NOT_NEGATING = re.compile(
    r"\b(?:no|without) (?:significant |appreciable |interval |substantial |definite |major )*"
    r"(?:interval )?(?:change|changes|progression|worsening)\b|\bnot without\b"
)

PRE_NEGATION = re.compile(
    r"\b(?:no|not|without|negative for|free of|free from|clear of|absence of|absent|resolution of|resolved|clearing of"
    r"|cleared|nor|neither|removal of|rather than|no longer|never)\b"
)
POST_NEGATION = re.compile(
    r"^[\s,]*(?:(?:is|are|was|were|has|have|had)\s+(?:been\s+)?)?(?:now\s+)?"
    r"(?:not\s+(?:seen|identified|visualized|present|appreciated|demonstrated|evident|noted|detected|visible|apparent)"
    r"|no longer\s+\w+|absent|resolved|removed|cleared|excluded|ruled out|negative)\b"
)
PRE_UNCERTAINTY = re.compile(
    r"\b(?:possible|possibly|probable|probably|may|might|could|questionable|question of|suspicious|suspected"
    r"|suspect|suggest\w*|concerning|worrisome|likely|presumed|presumably|versus|vs|differential|consider\w*"
    r"|equivocal|indeterminate|borderline|cannot exclude|uncertain|not (?:clearly|definitely)|either|perhaps"
    r"|may represent|could represent|favor\w*|raises? the possibility|r/o|rule out|to exclude)\b"
)
POST_UNCERTAINTY = re.compile(
    r"^[\s,]*(?:(?:is|are)\s+)?(?:(?:not\s+)?(?:excluded|ruled out)|(?:is |are )?(?:possible|suspected|questioned"
    r"|likely|versus|vs|not excluded|cannot be excluded|could be|may be|can not be excluded)|or\s+\w+|\?)"
)
#: Historical mentions ("history of pneumonia", "status post pneumonia", "prior pneumonia") are not
#: current findings. "previous"/"prior" only count right before the mention ("decreased from previous,
#: possibly atelectasis" is current).
HISTORY = re.compile(r"\b(?:history of|h/o|hx of|status post|s/p|previously treated)\b")
HISTORY_ADJACENT = re.compile(r"\b(?:previous|prior|remote)\s+(?:[\w-]+\s+)?$")

#: Where the scope of a preceding cue ends inside a sentence.
SCOPE_BREAK = re.compile(
    r";|\(|\)|\bbut\b|\bhowever\b|\balthough\b|\bthough\b|\bexcept\b|\bapart from\b|\baside from\b|\botherwise\b"
    r"|\bwhich\b|\bwhereas\b|,\s*(?:the|there|a|an|and the|and there|with)\b|\band (?:the|there|a|an)\b"
    r"|\bwith (?:the )?exception of\b|\bstable\b|\bunchanged\b|\bpersistent\b|\bpersists\b|\bcontinued\b"
    r"|,\s*(?:mild|mildly|moderate|small|tiny|trace|minimal|severe|new|increased|increasing|decreased|improved"
    r"|improving|worsening|worsened|left|right|bilateral|healed|old|chronic)\b"
)

#: Phrases that, with nothing positive or uncertain stated, make a report's "No Finding" positive.
NORMAL_REPORT = re.compile(
    r"\b(?:normal|no acute|unremarkable|lungs? (?:are |is )?clear|clear lungs|no active|negative (?:chest|exam)"
    r"|no (?:significant )?(?:abnormality|abnormalities|findings?|disease)|within normal limits)\b"
)

# ---------------------------------------------------------------------------------------------- details
LATERALITY = re.compile(r"\b(?:bilateral(?:ly)?|both|bibasilar|bibasal|bi-?apical|left|right)\b")
SEVERITY_WORDS: dict[str, str] = {
    "tiny": "tiny",
    "trace": "tiny",
    "minute": "tiny",
    "small": "small",
    "little": "small",
    "slight": "small",
    "moderate": "moderate",
    "moderately": "moderate",
    "moderate-sized": "moderate",
    "moderate-to-large": "large",
    "large": "large",
    "big": "large",
    "massive": "large",
    "sizable": "large",
    "extensive": "large",
    "mild": "mild",
    "mildly": "mild",
    "minimal": "mild",
    "minimally": "mild",
    "severe": "severe",
    "severely": "severe",
    "marked": "severe",
    "markedly": "severe",
    "significant": "severe",
    "gross": "severe",
}
SEVERITY = re.compile(r"\b(?:" + "|".join(sorted(map(re.escape, SEVERITY_WORDS), key=len, reverse=True)) + r")\b")
