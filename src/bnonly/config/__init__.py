"""Configuration: a run's fields and their checks (run.py), how a sweep runs (options.py), and how
presets, a sweep's grid, files, flags and keywords are layered into them (layers.py)."""
