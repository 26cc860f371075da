"""Command line: `bnonly train`, `bnonly sweep`, `bnonly report`, `bnonly reproduce`.

Bad input gives one line on stderr and exit code 2; data problems exit 1; never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import tomllib
from dataclasses import fields

from .config import DEFAULT_PRESET, PRESETS, TRAINABLE_SETS, ConfigError, RunConfig, parse_value, resolve
from .data import DataError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's default prints the whole usage)
        raise ConfigError(message)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_run_flags(p: argparse.ArgumentParser):
    """One flag per RunConfig field (strings, parsed and validated by the config itself)."""
    help_ = {"trainable": "what trains: " + ", ".join(TRAINABLE_SETS), "max_epochs": "at most this many epochs"}
    for f in fields(RunConfig):
        names = [_flag(f.name)] + (["--epochs"] if f.name == "max_epochs" else [])
        p.add_argument(*names, dest=f.name, metavar=f.type.upper(), default=None,
                       help=help_.get(f.name, f"default {f.default!r} (before the preset)"))
    p.add_argument("--preset", default=None, help=f"one of {', '.join(PRESETS)} (default {DEFAULT_PRESET})")
    p.add_argument("--config", default=None, help="TOML file of run settings (flags override it)")


def run_config_from_args(args) -> RunConfig:
    values = {}
    preset = DEFAULT_PRESET
    if args.config:
        table = load_toml(args.config)
        preset = table.pop("preset", preset)
        values.update(table)
    preset = args.preset or preset
    for f in fields(RunConfig):
        text = getattr(args, f.name)
        if text is not None:
            values[f.name] = parse_value(f.name, text)
    return resolve(preset, **values)


def load_toml(path: str) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None


# ---------------------------------------------------------------------------- train
def cmd_train(args) -> int:
    from tqdm import tqdm

    from .engine import Hooks, train

    cfg = run_config_from_args(args)
    bar = tqdm(total=0, unit="batch", file=sys.stderr, disable=None, leave=False, dynamic_ncols=True)

    def on_batch(epoch, b, n, m):
        if b == 1:
            bar.reset(total=n)
            bar.set_description(f"epoch {epoch}/{cfg.max_epochs}")
        bar.update(1)

    try:
        (r,) = train([cfg], device=args.device, data_dir=args.data_dir, hooks=Hooks(batch=on_batch))
    finally:
        bar.close()
    if args.save:
        import torch
        torch.save(r.model.state_dict(), args.save)
    s = r.summary()
    if args.json:
        print(json.dumps(s))
    else:
        for h in r.history:
            print(f"epoch {h['epoch']:3d}  train loss {h['train_loss']:.4f} acc {h['train_accuracy']:.4f}  "
                  f"val loss {h['val_loss']:.4f} acc {h['val_accuracy']:.4f}")
        print(f"{cfg.model} width={cfg.width} depth={cfg.depth} trainable={cfg.trainable} seed={cfg.seed}: "
              f"test accuracy {r.test_accuracy:.4f} (best epoch {r.best_epoch} of {r.epochs_run}, "
              f"{r.trainable_params:,} of {r.total_params:,} parameters trained, {r.seconds:.1f} s, {r.status})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bnonly", description="Train BatchNorm and only BatchNorm: MLPs and LeNet-5 on MNIST.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train one model and print its result")
    add_run_flags(t)
    t.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    t.add_argument("--data-dir", default=None, help="directory of IDX files instead of the packaged data")
    t.add_argument("--json", action="store_true", help="print the result as one JSON object (last line)")
    t.add_argument("--save", default=None, metavar="PATH", help="save the trained state_dict here")
    t.set_defaults(func=cmd_train)
    return p


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except ConfigError as e:
        print(f"bnonly: error: {e}", file=sys.stderr)
        return 2
    except DataError as e:
        print(f"bnonly: data error: {e}", file=sys.stderr)
        return 1
    except RuntimeError as e:
        if "cuda" in str(e).lower():
            print(f"bnonly: error: {e}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        print("bnonly: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
