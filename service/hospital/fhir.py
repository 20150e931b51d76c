"""The FHIR R4 DiagnosticReport of an answer, for the record (``Accept: application/fhir+json``).

``/predict`` gives one DiagnosticReport for its slice; ``/predict/series`` one per series (a ``Bundle`` of
type ``collection`` of them when the request held several):
status ``preliminary`` (an AI result nobody has verified), the finding as a coded ``conclusionCode`` in the
service's own code system, one contained ``Observation`` per class probability, the model as a contained
``Device`` (name, version, ONNX sha256) that each Observation names, and the key slice's Grad-CAM overlay as
a PNG ``presentedForm`` attachment. There is no ``subject``: the service does not know the patient, and the
JSON it builds from never carries DICOM identifiers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from service.hospital.schemas import SeriesAnswer, SeriesPredictResponse
from service.schemas import DISCLAIMER, ModelReference, PredictResponse

CLASS_SYSTEM: Final = "urn:brain-tumour-mri-inference:classes"
PROBABILITY_SYSTEM: Final = "urn:brain-tumour-mri-inference:probabilities"
LOINC: Final = "http://loinc.org"
UCUM: Final = "http://unitsofmeasure.org"
MANUFACTURER: Final = "brain-tumour-mri-inference"


def report_of(answer: SeriesPredictResponse) -> dict[str, Any]:
    """The DiagnosticReport of the answer's one series, or a collection Bundle of one per series."""
    issued = datetime.now(UTC).isoformat(timespec="seconds")
    reports = [_report(series, answer.model, issued) for series in answer.series]
    if len(reports) == 1:
        return reports[0]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": issued,
        "entry": [{"resource": report} for report in reports],
    }


def report_of_prediction(answer: PredictResponse) -> dict[str, Any]:
    """The DiagnosticReport of one ``/predict`` answer (an ``uncertain`` answer has no conclusion code)."""
    issued = datetime.now(UTC).isoformat(timespec="seconds")
    png = None if answer.gradcam is None else answer.gradcam.png_base64
    return _diagnostic_report(
        answer.probabilities, answer.label, png, answer.model, issued, what="slice", title="slice"
    )


def _display(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _device(model: ModelReference) -> dict[str, Any]:
    return {
        "resourceType": "Device",
        "id": "model",
        "manufacturer": MANUFACTURER,
        "deviceName": [{"name": model.name, "type": "model-name"}],
        "version": [{"value": model.version}],
        "identifier": [{"system": "urn:ietf:rfc:6920:sha-256", "value": model.sha256}],
        "note": [{"text": DISCLAIMER}],
    }


def _report(series: SeriesAnswer, model: ModelReference, issued: str) -> dict[str, Any]:
    png = None if series.gradcam is None else series.gradcam.png_base64
    return _diagnostic_report(
        series.probabilities or {}, series.label, png, model, issued, what="series", title="key slice"
    )


def _diagnostic_report(
    probabilities: dict[str, float],
    label: str | None,
    png_base64: str | None,
    model: ModelReference,
    issued: str,
    *,
    what: str,
    title: str,
) -> dict[str, Any]:
    observations = [
        {
            "resourceType": "Observation",
            "id": f"p{index}",
            "status": "preliminary",
            "code": {
                "coding": [
                    {
                        "system": PROBABILITY_SYSTEM,
                        "code": name,
                        "display": f"Probability of {_display(name)}",
                    }
                ]
            },
            "valueQuantity": {"value": round(value, 6), "unit": "1", "system": UCUM, "code": "1"},
            "device": {"reference": "#model"},
        }
        for index, (name, value) in enumerate(probabilities.items())
    ]
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "contained": [_device(model), *observations],
        "status": "preliminary",
        "code": {
            "coding": [{"system": LOINC, "code": "24590-2", "display": "MR Brain"}],
            "text": f"AI classification of a brain MRI {what}",
        },
        "issued": issued,
        "result": [{"reference": f"#{observation['id']}"} for observation in observations],
    }
    if label is not None:
        report["conclusion"] = f"{_display(label)} (AI finding over the {what}). {DISCLAIMER}"
        report["conclusionCode"] = [
            {"coding": [{"system": CLASS_SYSTEM, "code": label, "display": _display(label)}]}
        ]
    elif what == "series":
        report["conclusion"] = f"No slice of the series could be classified. {DISCLAIMER}"
    else:
        report["conclusion"] = f"Uncertain: the model gives no label for this slice. {DISCLAIMER}"
    if png_base64 is not None:
        report["presentedForm"] = [
            {
                "contentType": "image/png",
                "data": png_base64,
                "title": f"Grad-CAM overlay of the {title} (research use only)",
            }
        ]
    return report
