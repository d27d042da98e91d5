"""FHIR Bulk Data Access: ``$export`` jobs, run in the background, their files kept in the database."""
