"""The tooling wing: benchmarks and dev scripts that drive the runtime from outside.

The runtime (sources, workers, supervisor, runner, events) never imports this package; an
import-linter contract in pyproject.toml checks it in CI.
"""
