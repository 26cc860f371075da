"""The manual stays true to the code: links resolve, command lines parse, nothing is undocumented.

A renamed flag, field or study fails here, as does a link to a moved heading. No training."""
import argparse
import json
import re
import shlex
from dataclasses import fields
from pathlib import Path

import pytest

from bnonly import cli
from bnonly.config.layers import shipped_configs
from bnonly.config.layers import load_sweep
from bnonly.config.options import SweepOptions
from bnonly.config.run import RunConfig
from bnonly.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def prose(page: Path) -> str:
    """The page without its fenced code blocks (a `# comment` in a block is not a heading)."""
    return FENCE.sub("", text(page))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose(page).splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if m:
            s = slug(m.group(1))
            out.add(s if s not in seen else f"{s}-{seen[s]}")
            seen[s] = seen.get(s, 0) + 1
    return out


def test_the_manual_is_short_and_split_by_concern():
    assert len(text(ROOT / "README.md")) <= 20_000
    assert len(PAGES) - 1 >= 4


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(page):
    bad = []
    for target in LINK.findall(prose(page)):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no file {dest}")
        elif anchor and anchor not in anchors(dest):
            bad.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not bad, f"{page.name}: " + "; ".join(bad)


def command_lines(page: Path) -> list[str]:
    """Every `bnonly ...` line of the page's shell blocks, continuation lines joined."""
    lines = []
    for lang, body in FENCE.findall(text(page)):
        if lang not in ("bash", "sh", ""):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            if line.strip().startswith("bnonly "):
                lines.append(line.strip())
    return lines


def test_the_pages_show_commands():
    assert sum(len(command_lines(p)) for p in PAGES) >= 20


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_line_shown_parses_and_its_values_are_accepted(page):
    parser = cli.build_parser()
    for line in command_lines(page):
        argv = shlex.split(line, comments=True)[1:]
        try:
            args = parser.parse_args(argv)
            # beyond the flags' names: the run fields, the sweep's keys and options, checked as a run checks them
            if args.command == "train":
                cli.train_config(args)
            elif args.command in ("sweep", "reproduce"):
                load_sweep(args.config, args.set)
                SweepOptions(**cli.sweep_options(args))
        except (SystemExit, ConfigError) as e:
            pytest.fail(f"{page.name}: {line}: {e}")


def option_actions(parser: argparse.ArgumentParser, name="bnonly"):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub_name, sub in a.choices.items():
                yield from option_actions(sub, f"{name} {sub_name}")
        elif not isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
            yield name, a


def test_every_argument_has_help_and_every_flag_is_documented():
    commands = text(ROOT / "docs" / "commands.md")
    study = text(ROOT / "docs" / "study.md")
    run_fields = {f.name for f in fields(RunConfig)}
    missing = []
    for name, a in option_actions(cli.build_parser()):
        assert a.help, f"{name} {a.option_strings or a.dest}: no help"
        if a.dest in run_fields:
            continue  # a run field: documented as a field, below
        for flag in a.option_strings:
            if not re.search(rf"`[^`]*{re.escape(flag)}\b", commands):
                missing.append(f"{name} {flag}")
    assert not missing, "flags not in docs/commands.md: " + ", ".join(missing)
    undocumented = [f for f in run_fields if f"`{f}`" not in study]
    assert not undocumented, f"configuration fields not in docs/study.md: {undocumented}"


def test_every_exit_code_and_shipped_study_is_documented():
    commands = text(ROOT / "docs" / "commands.md")
    codes = re.findall(r"(\d+) \w", cli.main.__doc__.split(":", 1)[1])
    assert codes == ["0", "1", "2", "3", "130"]
    for code in codes:
        assert re.search(rf"^\| {code} \|", commands, re.M), f"exit code {code} not in docs/commands.md"
    readme = text(ROOT / "README.md")
    for study in shipped_configs():
        assert f"| `{study}` |" in readme, f"study {study} not in the README's table"
        assert f"| `{study}` |" in text(ROOT / "docs" / "study.md"), f"study {study} not in docs/study.md"


DATED = re.compile(r"\b20\d\d-[01]\d-[0-3]\d\b")
HISTORY = re.compile(r"\b(issue|session)s? ?#?\d*\b", re.I)
RATIO = re.compile(r"\b\d+(\.\d+)?x\b")  # a speed-up figure: it belongs to the performance page


def test_no_history_outside_the_measurements():
    """Dates only in benchmark result files and the performance page's tables that cite them; no
    session or issue numbers anywhere in the manual, the code, the Makefile or the studies; no
    speed-up figures in the code, the Makefile or the studies."""
    files = [*PAGES, *sorted((ROOT / "src" / "bnonly").glob("*.py")), ROOT / "Makefile",
             *sorted((ROOT / "configs").glob("*.toml"))]
    found = []
    for f in files:
        for n, line in enumerate(text(f).splitlines(), 1):
            dated_ok = f.name == "performance.md" and line.startswith(("|", "`results/"))
            in_code = f.suffix != ".md"
            if (DATED.search(line) and not dated_ok) or HISTORY.search(line) or (in_code and RATIO.search(line)):
                found.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()[:80]}")
    assert not found, "\n".join(found)


def test_the_performance_page_shows_the_result_files_written_by_the_benchmark():
    """Its tables are the result files' numbers, as `speed.py --table` prints them."""
    speed = load_speed()
    results = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    data = {r.name: json.loads(r.read_text()) for r in results}
    written = [n for n, d in data.items() if d["command"].startswith("python benchmarks/speed.py")
               and "transcribed_from" not in d]
    assert written, "no result file written by benchmarks/speed.py"
    page = text(ROOT / "docs" / "performance.md")
    for name, d in data.items():
        assert speed.markdown(d, name) in page, f"docs/performance.md does not show {name} as --table prints it"


def load_speed():
    import importlib.util
    import sys
    sys.path.insert(0, str(ROOT / "benchmarks"))  # speed.py imports its timing helpers by name
    try:
        spec = importlib.util.spec_from_file_location("speed", ROOT / "benchmarks" / "speed.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module
