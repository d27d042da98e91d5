"""ehr-sandbox: a FHIR R4 and HL7 v2 EHR server for training and vendor testing."""

__version__ = "0.1.0"
