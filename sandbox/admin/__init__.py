"""The admin REST API (``/admin``, JSON): sandboxes, baselines, users, tokens and cohorts."""
