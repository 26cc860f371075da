"""The shipped sweep configs (every .toml file here: sweep.shipped_configs() lists them), installed
as the package data `bnonly.configs` (see pyproject.toml) and found with importlib.resources."""
