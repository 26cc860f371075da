"""The shipped sweep configs (quick, claims, report, questions), installed as the package data
`bnonly.configs` (see pyproject.toml) and found with importlib.resources."""
