"""What exists, one registry entry each, read by every other module: trainable sets (sets.py),
normalization kinds (norms.py), models (models.py; their torch modules in nets.py) and data sets
(data.py). The bottom layer: it imports nothing of bnonly but errors and files."""
