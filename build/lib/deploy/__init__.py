"""Export, large-scene inference and benchmarks of the registered models (see deploy/README.md)."""
