"""The man pages (man/audiopolicyd.8, man/audiopolicyctl.1) match the programs' ``--help``.

Every option and every command ``--help`` lists (for audiopolicyctl: of every command and
subcommand) appears in the page, and every option the page names exists. The programs are
reached through their installed entry points, wherever their code lives.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib as tomli
else:  # pragma: no cover - Python 3.10
    import tomli

MAN = Path(__file__).resolve().parents[2] / "man"
_OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z-]*)")
#: The names argparse lists under a ``COMMAND`` positional (4 spaces in, then the name).
_COMMAND = re.compile(r"^    ([a-z][a-z-]*)(?:\s|$)", re.M)


def help_text(program: str, argv: list[str]) -> str:
    """``program argv... --help``, run in this process through its entry point."""
    (ep,) = importlib.metadata.entry_points(group="console_scripts", name=program)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        ep.load()([*argv, "--help"])
    assert exited.value.code == 0
    return out.getvalue()


def commands(text: str) -> list[str]:
    """The commands a help text lists under ``positional arguments``."""
    if "positional arguments:" not in text:
        return []
    block = text.split("positional arguments:", 1)[1].split("\noptions:", 1)[0]
    return _COMMAND.findall(block)


def every_help(program: str) -> dict[tuple[str, ...], str]:
    """The help of the program and of each command and subcommand, by argv."""
    out: dict[tuple[str, ...], str] = {}
    todo: list[list[str]] = [[]]
    while todo:
        argv = todo.pop()
        text = out[tuple(argv)] = help_text(program, argv)
        todo.extend([*argv, command] for command in commands(text))
    return out


def page(name: str) -> str:
    """A man page's text with roff's escaped hyphens as plain ones, font changes and comments
    left out."""
    lines = (MAN / name).read_text().splitlines()
    text = "\n".join(ln for ln in lines if not ln.startswith('.\\"')).replace("\\-", "-")
    return re.sub(r"\\f[BIRP]", "", text)


def tags(text: str) -> list[str]:
    """The tag lines of a page's ``.TP`` items (what each item documents)."""
    lines = text.splitlines()
    return [lines[i + 1] for i, ln in enumerate(lines[:-1]) if ln.strip() == ".TP"]


@pytest.mark.parametrize(("program", "name"), [("audiopolicyd", "audiopolicyd.8"),
                                               ("audiopolicyctl", "audiopolicyctl.1")])
def test_man_page_documents_every_option_and_command_of_help(program: str, name: str) -> None:
    helps = every_help(program)
    text = page(name)
    body = text[text.index(".SH DESCRIPTION"):]  # not just named in the synopsis
    in_help = {opt for h in helps.values() for opt in _OPTION.findall(h)}
    assert "--help" in in_help and "--version" in in_help
    assert sorted(in_help - set(_OPTION.findall(body))) == [], f"{name} misses options"
    assert sorted(set(_OPTION.findall(text)) - in_help) == [], f"{name} names options " \
                                                               "--help does not have"
    items = "\n".join(tags(text))
    for argv in helps:
        if argv:
            assert re.search(rf"(?<![\w-]){re.escape(' '.join(argv))}(?![\w-])", items), \
                f"{name} has no item for {' '.join(argv)!r}"


def test_every_command_is_found() -> None:
    """The walk above sees every command (so the page is held to all of them)."""
    argvs = set(every_help("audiopolicyctl"))
    for expected in [("status",), ("run",), ("agent",), ("policy",), ("policy", "check"),
                     ("policy", "simulate")]:
        assert expected in argvs


def test_pages_are_roff_with_their_section() -> None:
    assert page("audiopolicyd.8").startswith('.TH AUDIOPOLICYD 8 ')
    assert page("audiopolicyctl.1").startswith('.TH AUDIOPOLICYCTL 1 ')


def test_units_cite_pages_that_exist_and_are_installed() -> None:
    """Every ``man:`` page a systemd unit's ``Documentation=`` cites is in man/, and the
    package installs every page of man/ under share/man/manN (pyproject's data-files)."""
    root = MAN.parent
    cited = set()
    for unit in sorted((root / "systemd").glob("*/*.service")):
        for line in unit.read_text().splitlines():
            if line.startswith("Documentation="):
                cited.update(re.findall(r"man:([\w.-]+)\((\d)\)", line))
    assert ("audiopolicyd", "8") in cited and ("audiopolicyctl", "1") in cited
    for name, section in cited:
        assert (MAN / f"{name}.{section}").is_file(), f"man:{name}({section})"
    data_files = tomli.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "data-files"]
    installed = {f"{d}/{Path(f).name}" for d, files in data_files.items() for f in files}
    assert installed == {f"share/man/man{p.suffix[1:]}/{p.name}" for p in MAN.iterdir()}
