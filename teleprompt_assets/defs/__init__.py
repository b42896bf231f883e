"""The Dagster layer: wires the core modules into partitioned assets, checks and automation."""
