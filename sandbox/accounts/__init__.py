"""People and their groups: users with roles, password hashes, API tokens, cohorts and rosters."""
