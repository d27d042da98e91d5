"""FHIR R4: validation, the search parameter registry, search, bundles, operations and the REST routes."""
