"""Storage: tables, the one write path (Repository), the search index, and sandbox layers."""
