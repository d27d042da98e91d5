"""The trainee's EHR: assignments, the patient chart, entry forms and the task panel (``web/chart/routes.py``)."""
