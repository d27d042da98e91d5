"""HL7 v2 over MLLP: inbound messages to FHIR, outbound messages from FHIR writes, and a message log per sandbox."""
