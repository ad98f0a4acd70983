"""Metrics: small pure functions over per-item model outputs. Definitions: ../shared/docs/benchmarks.md."""
