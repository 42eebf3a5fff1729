"""The local stack: real services, shaped links, the measurement server and the
main job (``scripts/demo``), used by tests and benchmarks. Not in the wheel."""
