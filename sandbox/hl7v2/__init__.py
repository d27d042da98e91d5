"""HL7 v2 over MLLP: inbound messages to FHIR, outbound messages from FHIR writes, and a message log per sandbox."""

# The outbound translator's cursor in the outbox (``sandbox.store.outbox``; ``delivery.translate`` follows it).
TRANSLATOR = "hl7v2-translate"
