"""The production processes' Dagster entry points: code server, daemon, run-worker preload, pooled storage."""
