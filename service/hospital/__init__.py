"""Hospital integration: whole DICOM series in, DICOM results (SR, Secondary Capture) back, FHIR out.

- :mod:`service.hospital.instances`: request parts (DICOM files, ZIP archives) -> slices (multi-frame objects
  split into frames), grouped by Series Instance UID and ordered along the slice normal;
- :mod:`service.hospital.analysis`: every slice classified in batched ONNX runs, the per-series rule, the key
  slice and its Grad-CAM;
- :mod:`service.hospital.results`: the Comprehensive 3D SR (TID 1500) and the Secondary Capture written back;
- :mod:`service.hospital.dicomweb`: a study pulled with WADO-RS and the results stored with STOW-RS;
- :mod:`service.hospital.fhir`: the FHIR R4 DiagnosticReport of an analysis.

Privacy: DICOM attribute values (patient, study and series identifiers included) stay in pydicom data sets and
in the DICOM objects written back to the same study; the JSON and FHIR answers name slices and series by
per-request indexes only, and log lines carry only :data:`service.logging.LOG_FIELDS`.
"""
