"""How a configuration is put together, every layer in one place:
- a run (`bnonly train`, bnonly.train()): the defaults, a preset, a TOML file of run settings, then
  flags (text) or keywords (typed);
- a sweep (`bnonly sweep`, bnonly.sweep()): a shipped study, a TOML file or a SweepConfig, then
  `--set KEY=VALUE` (TOML values), then keywords;
- a selection (`bnonly report --where`, report(where=)): FIELD=VALUE strings or a dict.
A bad value is one ConfigError naming where it came from (the file, the flag or the keyword).
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path

from ..errors import ConfigError
from ..files import read_text
from .grid import CONFIG_DIR, SweepConfig, shipped_configs
from .run import DEFAULT_PRESET, FIELD_TYPES, GRID_KEYS, RunConfig, resolve


def load_toml(path) -> dict:
    """A TOML file as a dict; a missing, unreadable or malformed file is a one-line ConfigError naming it."""
    text = read_text(path, ConfigError, "a TOML file")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None


def parse_value(key: str, text: str):
    """A field's value from command-line text, in the field's type."""
    t = FIELD_TYPES[key]
    try:
        if t == "bool":
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        return {"int": int, "float": float, "str": str}[t](text)
    except ValueError:
        raise ConfigError(f"{key}={text!r}: expected {t}") from None


def path_arg(value, what: str) -> Path:
    """A path argument (str or os.PathLike, not empty), or a one-line ConfigError naming it."""
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value).strip():
        raise ConfigError(f"{what} {value!r}: expected a path")
    return Path(value)


# ---------------------------------------------------------------------------- a run
def run_config(config: RunConfig | None = None, preset: str | None = None, file=None,
               flags: dict[str, str] | None = None, **fields) -> RunConfig:
    """A run: a RunConfig (then only fields change it), or the defaults, the preset (the argument,
    else the file's `preset`, else 'report'), the file's run settings, the flags (text, parsed as
    their fields' types), then the typed fields."""
    if config is not None:
        if preset is not None or file is not None:
            raise ConfigError("give a RunConfig or a preset and a file, not both")
        if not isinstance(config, RunConfig):
            raise ConfigError(f"config: expected a RunConfig, got {type(config).__name__}")
        return resolve(DEFAULT_PRESET, **{**dataclasses.asdict(config), **fields})
    values = {}
    if file is not None:
        table = load_toml(path_arg(file, "--config"))
        table_preset = table.pop("preset", None)
        if table_preset is not None and not isinstance(table_preset, str):
            raise ConfigError(f"{file}: preset must be a string, got {table_preset!r}")
        preset = preset or table_preset
        values.update(table)
    values.update({k: parse_value(k, v) for k, v in (flags or {}).items()})
    values.update(fields)
    return resolve(preset or DEFAULT_PRESET, **values)


# ---------------------------------------------------------------------------- a sweep
def parse_set(items: list[str]) -> dict:
    """`--set key=value` pairs; the value is TOML (`[10, 100]`, `"bn"`, `3`), or a bare word."""
    if isinstance(items, str) or not isinstance(items, (list, tuple)):
        raise ConfigError(f"--set {items!r}: expected KEY=VALUE strings")
    out = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, text = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text  # a bare word, e.g. --set preset=frankle
        out[key.strip()] = value
    return out


def _check_overrides(table: dict, source: str) -> None:
    """Overrides checked on their own, so a bad one names the flag or keyword it came from."""
    SweepConfig.check_keys(table, source)
    for key, value in table.items():
        if key in GRID_KEYS:
            SweepConfig.check_grid(key, value, source)
        elif key in ("name", "preset") and not isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be a string, got {value!r}")


def sweep_file(spec) -> tuple[Path, dict]:
    """A shipped study's name or a TOML path, and its table (its name, where it has none, the file's)."""
    if not isinstance(spec, (str, os.PathLike)) or not os.fspath(spec).strip():
        raise ConfigError(f"sweep config {spec!r}: expected a shipped study ({', '.join(shipped_configs())}) "
                          "or a .toml path")
    path = Path(os.fspath(spec))
    if not path.suffix and not path.exists():
        path = CONFIG_DIR / f"{os.fspath(spec)}.toml"
        if not path.is_file():
            raise ConfigError(f"no sweep config {os.fspath(spec)!r} (shipped: {', '.join(shipped_configs())}; or give "
                              "a .toml path)")
    elif path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a sweep config (.toml)")
    table = load_toml(path)
    if not table:
        raise ConfigError(f"{path}: an empty sweep file (give its grid, e.g. widths = [10, 100], or run settings)")
    table.setdefault("name", Path(path.name).stem)
    return path, table


def load_sweep(config="quick", sets: list[str] | None = None, keywords: dict | None = None) -> SweepConfig:
    """A sweep: a shipped study, a TOML path or a SweepConfig, then `--set` strings, then keywords
    (the Python API's), each checked under its own name; the grid is expanded once, here."""
    if isinstance(config, SweepConfig):
        source, table = "sweep()", config.to_dict()
    elif isinstance(config, (str, os.PathLike)):
        path, table = sweep_file(config)
        source = str(path)
    else:
        raise ConfigError(f"config {type(config).__name__}: expected a shipped study name "
                          f"({', '.join(shipped_configs())}), a TOML path or a SweepConfig")
    for overrides, name in ((parse_set(sets or []), "--set"), (dict(keywords or {}), "sweep()")):
        _check_overrides(overrides, name)
        table.update(overrides)
    return SweepConfig.from_dict(table, source=source)


# ---------------------------------------------------------------------------- a selection
def parse_where(where) -> dict:
    """`--where` as {field: value}: from "FIELD=VALUE" strings (the command line's) or a dict
    (values as typed, or as text); each field a run field, each value parsed as that field's type."""
    if where is None:
        return {}
    if isinstance(where, dict):
        items = [(k, v, f"{k}={v}") for k, v in where.items()]
    else:
        if isinstance(where, str):
            where = [where]
        if not isinstance(where, (list, tuple)) or not all(isinstance(w, str) for w in where):
            raise ConfigError(f"where {where!r}: expected a dict of field values or FIELD=VALUE strings")
        items = []
        for item in where:
            key, sep, value = item.partition("=")
            items.append((key.strip() if sep else None, value.strip(), item))
    out = {}
    for key, value, item in items:
        if key not in FIELD_TYPES:
            raise ConfigError(f"--where {item!r}: expected FIELD=VALUE with a run field ({', '.join(FIELD_TYPES)})")
        out[key] = parse_value(key, value if isinstance(value, str) else str(value))
    return out
