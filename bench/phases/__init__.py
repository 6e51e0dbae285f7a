"""One module per benchmark phase, each with `run(bench) -> dict` (bench/run.py runs them)."""
