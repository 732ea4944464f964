"""Dagster objects only, kept thin: resources, partitions, assets, checks, jobs, schedules and sensors."""
