"""Serving engine: torch model, workers, expert parallelism. Needs the `engine` extra."""
