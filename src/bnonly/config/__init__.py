"""Configuration: a run (run.py), a sweep's grid (grid.py), how a sweep runs (options.py), and how
defaults, presets, files, flags and keywords are layered into them (layers.py)."""
