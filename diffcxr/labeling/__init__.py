"""Report labels: the 14 CheXpert observations, laterality/severity details and disease sentences.

``RuleLabeler`` needs no weights; ``CsvLabeler`` and ``ChexbertLabeler`` plug in
labels users already have. All of them produce the same ``ReportLabels``, so the
manifest columns are the same whichever labeler filled them.
"""

from diffcxr.labeling.base import Labeler, ReportLabels, decode_report
from diffcxr.labeling.rules import RuleLabeler
from diffcxr.labeling.sentences import UNCERTAIN_POLICIES, disease_sentence

__all__ = ["UNCERTAIN_POLICIES", "Labeler", "ReportLabels", "RuleLabeler", "decode_report", "disease_sentence"]
