"""Hand-written tricky report sentences with the labels a radiologist expects (CheXpert conventions).

Every case lists the observations it is about; those must come out exactly as
written (1 positive, 0 negative, -1 uncertain, None not mentioned). Observations
not listed are not checked, except where ``ONLY`` is given, which demands that
no other pathology is positive or uncertain.
"""

from __future__ import annotations

import pytest

from diffcxr.labeling import RuleLabeler

AT, CM, CO, ED = "Atelectasis", "Cardiomegaly", "Consolidation", "Edema"
EC, FR, LL, LO = "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion", "Lung Opacity"
NF, PE, PO, PN = "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia"
PX, SD = "Pneumothorax", "Support Devices"

CASES: list[tuple[str, dict[str, int | None]]] = [
    # --- plain negation
    ("No pneumothorax.", {PX: 0, NF: 1}),
    ("There is no pleural effusion.", {PE: 0, NF: 1}),
    ("Without evidence of pneumothorax.", {PX: 0}),
    ("Negative for focal consolidation.", {CO: 0}),
    ("The lungs are free of focal airspace disease.", {LO: 0}),
    ("No evidence of edema.", {ED: 0}),
    ("Absence of pleural effusion.", {PE: 0}),
    ("Pneumothorax is not seen.", {PX: 0}),
    ("A pleural effusion is not identified.", {PE: 0}),
    ("The heart is not enlarged.", {CM: 0, NF: 1}),
    ("Heart size is normal.", {CM: 0, NF: 1}),
    ("The cardiomediastinal silhouette is within normal limits.", {CM: 0, EC: 0}),
    ("Normal heart size and mediastinal contours.", {CM: 0}),
    ("No acute bony abnormality. No displaced rib fracture.", {FR: 0}),
    ("Costophrenic angles are sharp.", {PE: 0}),
    # --- lists under one negation
    ("No effusion, pneumothorax, or consolidation.", {PE: 0, PX: 0, CO: 0}),
    ("No focal consolidation, pleural effusion or pneumothorax.", {CO: 0, PE: 0, PX: 0}),
    ("No pneumonia, effusions, edema, pneumothorax, nodules or masses.", {PN: 0, PE: 0, ED: 0, PX: 0, LL: 0}),
    ("There is no pneumothorax or large pleural effusion.", {PX: 0, PE: 0}),
    ("Lungs are clear without focal consolidation, effusion, or pneumothorax.", {CO: 0, PE: 0, PX: 0}),
    # --- scope ends
    ("No pneumothorax; small left pleural effusion.", {PX: 0, PE: 1}),
    ("No pneumothorax, but there is a small left pleural effusion.", {PX: 0, PE: 1}),
    ("No pneumothorax, small left effusion.", {PX: 0, PE: 1}),
    ("No effusion, however the heart is enlarged.", {PE: 0, CM: 1}),
    ("No focal consolidation and the heart is enlarged.", {CO: 0, CM: 1}),
    ("Mild cardiomegaly without pulmonary edema.", {CM: 1, ED: 0}),
    ("Cardiomegaly. No edema.", {CM: 1, ED: 0}),
    # --- uncertainty
    ("Possible right lower lobe pneumonia.", {PN: -1}),
    ("Cannot exclude a small pneumothorax.", {PX: -1}),
    ("A small pneumothorax cannot be excluded.", {PX: -1}),
    ("Pneumonia is not excluded.", {PN: -1}),
    ("Early pneumonia cannot be ruled out.", {PN: -1}),
    ("Opacity may represent atelectasis.", {AT: -1, LO: 1}),
    ("Left basilar opacity, atelectasis versus pneumonia.", {AT: -1, PN: -1, LO: 1}),
    ("Atelectasis vs infiltrate at the left base.", {AT: -1}),
    ("Findings suggestive of mild interstitial edema.", {ED: -1}),
    ("Findings concerning for pneumonia.", {PN: -1}),
    ("Questionable small left effusion.", {PE: -1}),
    ("Probable small bilateral pleural effusions.", {PE: -1}),
    ("Subsegmental atelectasis or scarring in the lingula.", {AT: -1}),
    ("The cardiac silhouette is borderline enlarged.", {CM: -1}),
    ("There may be a small right effusion.", {PE: -1}),
    ("Suspected left rib fracture.", {FR: -1}),
    ("Likely atelectasis in the left base.", {AT: -1}),
    # --- negation beats a later uncertainty word
    ("There is no focal airspace opacity to suggest pneumonia.", {LO: 0, PN: 0}),
    ("No findings to suggest pneumothorax.", {PX: 0}),
    # --- "no change", "no new", unchanged, stable
    ("No change in moderate cardiomegaly.", {CM: 1}),
    ("No interval change in the small left pleural effusion.", {PE: 1}),
    ("No significant change in the appearance of the right pneumothorax.", {PX: 1}),
    ("No new consolidation.", {CO: 0}),
    ("No new focal airspace opacity.", {LO: 0}),
    ("Unchanged cardiomegaly.", {CM: 1}),
    ("Stable small left pleural effusion.", {PE: 1}),
    ("Stable cardiomegaly and no pneumothorax.", {CM: 1, PX: 0}),
    ("No pneumothorax and stable cardiomegaly.", {PX: 0, CM: 1}),
    ("Persistent right lower lobe consolidation.", {CO: 1}),
    # --- resolved, removed, improved
    ("The right pneumothorax has resolved.", {PX: 0}),
    ("Resolved left lower lobe pneumonia.", {PN: 0}),
    ("Interval resolution of the pleural effusion.", {PE: 0}),
    ("Interval removal of the endotracheal tube.", {SD: 0}),
    ("The chest tube has been removed.", {SD: 0}),
    ("Improving left lower lobe consolidation.", {CO: 1}),
    ("Decreased size of the right pleural effusion.", {PE: 1}),
    ("The pneumothorax is no longer visualized.", {PX: 0}),
    # --- historical mentions and status post
    ("History of pneumonia.", {PN: None}),
    ("Patient with a history of congestive heart failure. Lungs are clear.", {ED: None, NF: 1}),
    ("Status post pneumonia, now clear.", {PN: None}),
    ("Status post median sternotomy.", {SD: 1}),
    ("Status post CABG with sternotomy wires.", {SD: 1}),
    ("Old healed left rib fractures.", {FR: 1}),
    ("Prior granulomatous disease with calcified granulomas.", {LL: 1}),
    # --- synonyms and spelling variants
    ("The cardiac silhouette is enlarged.", {CM: 1}),
    ("Enlarged heart.", {CM: 1}),
    ("Enlargement of the cardiac silhouette.", {CM: 1}),
    ("Collapse of the right upper lobe.", {AT: 1}),
    ("Left lower lobe collapse.", {AT: 1}),
    ("Plate-like atelectasis in the right base.", {AT: 1}),
    ("Atelectatic changes at the bases.", {AT: 1}),
    ("A 2 cm nodule in the right upper lobe.", {LL: 1}),
    ("Right hilar mass.", {LL: 1}),
    ("Calcified granuloma in the left lung.", {LL: 1}),
    ("Findings consistent with CHF.", {ED: 1}),
    ("Pulmonary vascular congestion.", {ED: 1}),
    ("Mild interstitial oedema.", {ED: 1}),
    ("Widened mediastinum.", {EC: 1}),
    ("The mediastinum is widened.", {EC: 1}),
    ("Blunting of the left costophrenic angle.", {PE: 1}),
    ("Bilateral pleural effusions.", {PE: 1}),
    ("Small pericardial effusion.", {PE: None}),
    ("Patchy airspace disease in the right lower lobe.", {LO: 1}),
    ("Right lower lobe infiltrate.", {LO: 1}),
    ("Left apical pleural thickening.", {PO: 1, PE: None}),
    ("Bilateral calcified pleural plaques.", {PO: 1}),
    ("Right-sided hydropneumothorax.", {PX: 1, PE: 1}),
    ("Mass effect on the trachea.", {LL: None}),
    ("Sclerotic bone lesion in T8.", {LL: None}),
    # --- support devices
    ("Endotracheal tube tip 4 cm above the carina.", {SD: 1}),
    ("Left-sided pacemaker with leads in the right atrium and ventricle.", {SD: 1}),
    ("Right PICC line terminates in the SVC.", {SD: 1}),
    ("Surgical clips in the right upper quadrant.", {SD: 1}),
    ("Nasogastric tube courses below the diaphragm.", {SD: 1}),
    # --- No Finding convention
    ("No acute cardiopulmonary abnormality.", {NF: 1}),
    ("The lungs are clear. Heart and mediastinum normal.", {NF: 1}),
    ("Normal chest. Pacemaker in place.", {NF: 1, SD: 1}),
    ("Small right effusion. Otherwise normal.", {NF: None, PE: 1}),
    ("Possible small left effusion, otherwise no acute abnormality.", {NF: None, PE: -1}),
    # --- double negatives and odd phrasing
    ("Not without some residual atelectasis at the left base.", {AT: 1}),
    ("Cardiomegaly is again noted.", {CM: 1}),
    ("Heart size at the upper limits of normal.", {CM: 0}),
]

ONLY: dict[str, set[str]] = {
    "Bilateral pleural effusions.": {PE},
    "Widened mediastinum.": {EC},
    "Right lower lobe infiltrate.": {LO},
}


def test_there_are_at_least_80_cases() -> None:
    assert len(CASES) >= 80
    assert len({text for text, _ in CASES}) == len(CASES)


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0][:48] for c in CASES])
def test_case(text: str, expected: dict[str, int | None]) -> None:
    labels = RuleLabeler().label_text(text).labels
    got = {name: labels[name] for name in expected}
    assert got == expected
    if text in ONLY:
        others = {n for n, v in labels.items() if v in (1, -1) and n not in (NF, SD)} - ONLY[text]
        assert not others
