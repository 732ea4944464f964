"""Everything about the Meta Marketing API, with no Dagster imports."""
