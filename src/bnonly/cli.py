"""Command line: `bnonly train`, `sweep`, `report`, `reproduce`, `analyze`, `export`, `export-model`.

Each command parses its flags and calls the API function of the same operation (api.py). Bad
input gives one line on stderr and exit code 2; data problems exit 1; never a traceback. Only the
configuration layer is imported up front, so `bnonly --help` and usage errors answer without
loading torch; a command imports the API when it runs.
"""
from __future__ import annotations

import argparse
import errno
import json
import sys
from dataclasses import fields
from pathlib import Path

from . import api, files
from .config.layers import DEFAULT_PRESET, PRESETS, run_config, shipped_configs
from .config.options import RAY, SweepOptions, option_type
from .config.run import CHOICES, RunConfig
from .errors import BnonlyError, ConfigError, OutOfMemory
from .registry.data import DataError
from .registry.models import arch_name
from .registry.sets import SETS
from .version import __version__, code_hash


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's default prints the whole usage)
        raise ConfigError(message)


class VersionAction(argparse.Action):
    """`bnonly --version`: the package version and the hash of the code it runs (no git: version.py)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="show the version and the code's hash, then exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"bnonly {__version__} (code {code_hash()})")
        parser.exit()


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _default_text(value) -> str:
    """A default as a TOML file or a flag writes it (false, not False)."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


def add_run_flags(p: argparse.ArgumentParser):
    """One flag per RunConfig field (strings, parsed and validated by the config itself)."""
    for f in fields(RunConfig):
        names = [_flag(f.name)] + (["--epochs"] if f.name == "max_epochs" else [])
        if f.name == "trainable":  # each set with its meaning, from the registry
            choices = ": " + " | ".join(f"{n}: {s.help}" for n, s in SETS.items())
        else:
            choices = f": one of {', '.join(CHOICES[f.name])}" if f.name in CHOICES else ""
        p.add_argument(*names, dest=f.name, metavar=f.type.upper(), default=None,
                       help=(f"{f.metadata['help']}{choices}; default {_default_text(f.default)} "
                             "(a preset may change it)").replace("%", "%%"))
    p.add_argument("--preset", default=None, help=f"one of {', '.join(PRESETS)} (default {DEFAULT_PRESET})")
    p.add_argument("--config", default=None, help="TOML file of run settings (flags override it)")


# ---------------------------------------------------------------------------- train
def train_config(args) -> RunConfig:
    """The run of `bnonly train`: its preset, its --config file, then its flags."""
    flags = {f.name: getattr(args, f.name) for f in fields(RunConfig) if getattr(args, f.name) is not None}
    return run_config(preset=args.preset, file=args.config, flags=flags)


def cmd_train(args) -> int:
    cfg = train_config(args)
    if args.save is not None:
        api.writable(args.save, "--save")
    r = api.train(cfg, device=args.device, data_dir=args.data_dir)
    s = r.summary()
    if args.json:
        print(files.strict_json(s))
    else:
        for h in r.history:
            print(f"epoch {h['epoch']:3d}  train loss {h['train_loss']:.4f} acc {h['train_accuracy']:.4f}  "
                  f"val loss {h['val_loss']:.4f} acc {h['val_accuracy']:.4f}")
        print(f"{arch_name(cfg)} trainable={cfg.trainable} seed={cfg.seed}: "
              f"test accuracy {r.test_accuracy:.4f} (best epoch {r.best_epoch} of {r.epochs_run}, "
              f"{r.trainable_params:,} of {r.total_params:,} parameters trained, {r.seconds:.1f} s on {r.device}, "
              f"{r.status})")
    if args.save is not None:  # after the result is printed: a failing disk does not lose it
        save_state_dict(r.model, args.save, "--save")
    return 0


def save_state_dict(model, path, what: str) -> None:
    """A model's state_dict written all or nothing (files.write); a failure is one line."""
    import torch
    files.write(path, lambda fh: torch.save(model.state_dict(), fh), what)


# ---------------------------------------------------------------------------- sweep / report
def add_option_flags(p: argparse.ArgumentParser, names=None):
    """One flag per SweepOptions field (or those of `names`), its help and default from the field."""
    ray = None
    for f in fields(SweepOptions):
        if names is not None and f.name not in names:
            continue
        if f.metadata.get("group") == RAY and names is None:
            ray = ray or p.add_argument_group(RAY)
        target = ray if f.metadata.get("group") == RAY and names is None else p
        kind, help = option_type(f.name), f.metadata["help"]
        if kind is bool:  # on by default: the flag turns it off
            target.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false",
                                help=f"do not {help[0].lower()}{help[1:]}")
            continue
        default = "" if f.default is None else f" (default {f.default})"
        target.add_argument(_flag(f.name), dest=f.name, type=kind, default=f.default,
                            choices=f.metadata.get("choices"),
                            metavar=None if f.metadata.get("choices") else f.name.upper(),
                            help=(help + default).replace("%", "%%"))


def sweep_options(args) -> dict:
    """The SweepOptions of `bnonly sweep` and `reproduce`, as bnonly.sweep()'s keywords."""
    return {f.name: getattr(args, f.name) for f in fields(SweepOptions)}


def _sweep(args):
    s = api.sweep(args.config, args.out, sets=args.set, **sweep_options(args))
    return s.out, s.stats


FAILED_RUNS = 3  # exit code of a sweep that ended with failed runs


def _sweep_status(out, stats) -> int:
    """0, or FAILED_RUNS with a last line that says how many failed and how to retry them."""
    if not stats.get("failed"):
        return 0
    refused = stats.get("refused", 0)
    why = "their configuration cannot run, e.g. an impossible random allocation: change the grid, a retry fails again"
    if not refused:
        advice = "run the same command again to retry them"
    elif refused == stats["failed"]:
        advice = f"the engine refused them ({why})"
    else:
        advice = (f"run the same command again to retry {stats['failed'] - refused} of them; the engine refused the "
                  f"other {refused} ({why})")
    print(f"bnonly: {stats['failed']} of {stats['trained']} runs failed (their errors are in {out}/results.sqlite: "
          f"bnonly export {out} failed.csv); {advice}", file=sys.stderr)
    return FAILED_RUNS


def cmd_sweep(args) -> int:
    out, stats = _sweep(args)
    return _sweep_status(out, stats)


def _report(out_dir, where: dict | None = None, data_dir=None, to=None) -> int:
    """Write the report, then print its path and its headline: BN-only against random weights."""
    html = api.report(out_dir, where=where, data_dir=data_dir, to=to)
    print(f"report: {html} ({len(list(html.parent.glob('*.png')))} figures; results.csv beside it)")
    doc = json.loads((html.parent / "report.json").read_text())
    for sentence in doc["headline"]["sentences"]:
        print(f"  {sentence}")
    if doc["headline"].get("answer"):
        print(f"  {doc['headline']['answer']}")
    warn_damaged(Path(out_dir) / "results.sqlite", doc["damaged"])
    return 0


def warn_damaged(store, damaged: dict) -> None:
    """One line on stderr naming the damaged runs a command left out ({run_id: why})."""
    if damaged:
        shown = "; ".join(f"{k} ({v})" for k, v in sorted(damaged.items())[:5]) + ("; ..." if len(damaged) > 5 else "")
        print(f"bnonly: {store}: {len(damaged)} damaged run(s) left out: {shown}", file=sys.stderr)


def cmd_analyze(args) -> int:
    from .reports.render import md_table
    result = api.analyze(args.dir, args.data_dir, args.out)
    warn_damaged(Path(args.dir) / "results.sqlite", {**result["damaged"], **result["left_out"]})
    if not result["runs"]:
        print("nothing to analyze: no finished run of bn, bn+out, all, gamma or beta with a stored model")
        return 0
    print(md_table(*result["table"]))
    for a in result["answers"]:
        print(a)
    print(f"{result['runs']} runs analyzed; figures in {result['dir']}: {', '.join(result['figures'])}")
    return 0


def cmd_report(args) -> int:
    return _report(args.dir, args.where, args.data_dir, args.out)


def cmd_reproduce(args) -> int:
    out, stats = _sweep(args)
    code = _report(out, data_dir=args.data_dir)
    return _sweep_status(out, stats) or code


def cmd_export(args) -> int:
    print(f"wrote {api.export(args.dir, args.path)}")
    return 0


def cmd_export_model(args) -> int:
    api.writable(args.path, "export-model")
    api.not_the_store(args.path, args.dir, "export-model")
    model = api.load_model(args.dir, args.run_id)
    save_state_dict(model, args.path, "export-model")
    (row,) = api.open_store(args.dir).runs(run_id=args.run_id)
    c = row["config"]
    print(f"wrote {args.path}: the state_dict of {arch_name(c)} (norm {c['norm']!r}), trained set {c['trainable']!r}, "
          f"test accuracy {row['test_accuracy']:.4f}; load it with torch.load(path, weights_only=True)")
    return 0


def _add_sweep_flags(p, default_config=None):
    studies = f"a shipped study ({', '.join(shipped_configs())}) or a TOML path"
    if default_config:
        p.add_argument("--config", default=default_config, help=f"{studies} (default {default_config})")
    else:
        p.add_argument("config", help=studies)
    p.add_argument("--out", default=None, help="results directory (default runs/NAME)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, value in TOML syntax: --set widths=[10,100] --set max_epochs=5")
    add_option_flags(p)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bnonly",
                description="Train BatchNorm and only BatchNorm: MLPs and LeNet-5 on MNIST, CIFAR ResNets and VGG.")
    p.add_argument("--version", action=VersionAction)
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    t = sub.add_parser("train", help="train one model and print its result")
    add_run_flags(t)
    add_option_flags(t, ("device", "data_dir"))
    t.add_argument("--json", action="store_true", help="print the result as one JSON object (last line)")
    t.add_argument("--save", default=None, metavar="PATH", help="save the trained state_dict here")
    t.set_defaults(func=cmd_train)

    sw = sub.add_parser("sweep", help="train a grid of runs into a results store (resumable)")
    _add_sweep_flags(sw)
    sw.set_defaults(func=cmd_sweep)

    rp = sub.add_parser("report", help="figures, tables and the claims report of a results directory")
    rp.add_argument("dir", help="a results directory (its results.sqlite); the report is written into it")
    rp.add_argument("--data-dir", default=None, help="the data directory the runs were trained with (for the analysis)")
    rp.add_argument("--where", action="append", default=[], metavar="FIELD=VALUE",
                    help="only runs with this configuration value (repeatable), e.g. --where max_epochs=10; "
                         "a store that holds several studies reports the largest unless --where selects another")
    rp.add_argument("--out", default=None, metavar="DIR", help="write the report into DIR instead of the results "
                    "directory (e.g. one directory for each --where)")
    rp.set_defaults(func=cmd_report)

    an = sub.add_parser("analyze",
                        help="what the affine parameters learn: gamma/beta, disabled and dead units, ablation")
    an.add_argument("dir", help="a results directory (its results.sqlite)")
    an.add_argument("--data-dir", default=None, help="the data directory the runs were trained with")
    an.add_argument("--out", default=None, help="where the figures go (default: DIR/analysis; the report's own "
                                                 "files are never touched)")
    an.set_defaults(func=cmd_analyze)

    rr = sub.add_parser("reproduce", help="sweep + report in one command")
    _add_sweep_flags(rr, default_config="quick")
    rr.set_defaults(func=cmd_reproduce)

    ex = sub.add_parser("export", help="export a results store to CSV (or .parquet with pandas/pyarrow)")
    ex.add_argument("dir", help="a results directory (its results.sqlite)")
    ex.add_argument("path", help="the file to write: .csv, or .parquet (needs the 'parquet' extra)")
    ex.set_defaults(func=cmd_export)

    em = sub.add_parser("export-model", help="write a stored run's trained model as a plain PyTorch state_dict")
    em.add_argument("dir", help="a results directory (its results.sqlite)")
    em.add_argument("run_id", help="the run's id (the run_id column of bnonly export or bnonly.results)")
    em.add_argument("path",
                    help="the file to write the state_dict to (load it with torch.load(path, weights_only=True))")
    em.set_defaults(func=cmd_export_model)
    return p


ADVICE = {errno.ENOSPC: "free some space and run it again (what was stored before is intact)",
          errno.ENAMETOOLONG: "use a shorter name (the system allows 255 bytes a path component)",
          errno.EACCES: "choose a path you may write", errno.EROFS: "choose a path on a writable file system",
          errno.EDQUOT: "free some of your quota and run it again"}


def os_error(e: OSError) -> str:
    """An OSError as one line: the path, the system's reason, and what to do."""
    where = f"{e.filename}: " if e.filename else ""
    if len(where) > 160:
        where = where[:80] + "..." + where[-60:]
    advice = ADVICE.get(e.errno)
    return f"{where}{e.strerror or e}" + (f"; {advice}" if advice else "")


def main(argv=None) -> int:
    """Exit codes: 0 done; 1 data, store, memory or output error; 2 usage; 3 a sweep with failed runs; 130 Ctrl-C."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return args.func(args)
    except ConfigError as e:
        print(f"bnonly: error: {e}", file=sys.stderr)
        return 2
    except DataError as e:
        print(f"bnonly: data error: {e}", file=sys.stderr)
        return 1
    except OutOfMemory as e:
        print(f"bnonly: {e}", file=sys.stderr)
        return 1
    except BnonlyError as e:  # a store, an output
        print(f"bnonly: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a path or a disk the system refuses; every output is staged, so none is half-written
        print(f"bnonly: error: {os_error(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bnonly: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
