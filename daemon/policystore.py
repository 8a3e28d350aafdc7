"""Find policy files, apply overrides, keep the last good set.

Search path, later wins per file name (as systemd and TuneD do with vendor and admin dirs):

1. the shipped defaults (the ``audiopolicyd.policies`` package),
2. ``/etc/audiopolicyd/policies``,
3. ``$XDG_CONFIG_HOME/audiopolicyd/policies`` (``~/.config/...``) in user mode.

A file of size 0 or a symlink to ``/dev/null`` in a later directory masks the earlier file of
that name. A reload that finds any problem keeps the last good set in force and reports every
problem as ``file: dotted.key.path: message``.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .policy import (
    PolicyError, PolicySet, Problem, build_policy_set, parse_policy, parse_toml, shorten,
)

logger = logging.getLogger(__name__)

#: Largest policy file read, in bytes; larger files are reported, not parsed.
MAX_FILE_BYTES = 1 << 20


def shipped_dir() -> Path:
    """The directory of the shipped policies (works for wheel and editable installs)."""
    return Path(str(resources.files("audiopolicyd.policies")))


def default_dirs(system: bool = False) -> list[Path]:
    """The search path, lowest precedence first.

    :param system: system mode: no per-user directory
    """
    dirs = [shipped_dir(), Path("/etc/audiopolicyd/policies")]
    if not system:
        config = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
        dirs.append(Path(config) / "audiopolicyd" / "policies")
    return dirs


def find_files(dirs: Sequence[Path], files: Sequence[Path] = ()) -> list[Path]:
    """Policy files in force: ``*.toml`` of every dir, a later dir winning per file name, then
    each of ``files`` replacing the file of its name (``audiopolicyctl policy check FILE``).
    A winner that is a mask (size 0, or a link to ``/dev/null``) leaves its name out."""
    chosen: dict[str, Path] = {}
    for d in dirs:
        if not d.is_dir():
            continue
        for path in sorted(d.glob("*.toml")):
            chosen[path.name] = path
    for path in files:
        chosen[path.name] = path
    return [p for _, p in sorted(chosen.items()) if not masked(p)]


def masked(path: Path) -> bool:
    """True when ``path`` masks the earlier file of its name: empty, or a link to /dev/null
    (as systemd's unit masks)."""
    try:
        return os.path.realpath(path) == os.devnull or path.stat().st_size == 0
    except (OSError, RuntimeError):  # a symlink loop: not a mask, reported when read
        return False


def display_name(path: Path) -> str:
    """The path as problems and explanations name it: valid UTF-8 whatever the file system
    holds (a name's undecodable bytes as ``\\xff``), as D-Bus strings must be."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def load_files(files: Sequence[Path],
               plugin_schemas: Mapping[str, Mapping[str, Any]] | None = None) -> PolicySet:
    """Parse files into a policy set, collecting every problem of every file.

    Whatever goes wrong while one file is read, decoded or validated is a problem of that
    file (``(file)``, ``(toml)`` or a key path), never another exception: a reload then keeps
    the last good set.

    :raises PolicyError: with all problems, when any file or the set is invalid
    """
    problems: list[Problem] = []
    policies = []
    for path in files:
        name = display_name(path)
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):
                # a FIFO or a device would block the read (and the daemon's loop) for good
                raise PolicyError([Problem(name, "(file)", "not a regular file")])
            size = info.st_size
            if size > MAX_FILE_BYTES:
                raise PolicyError([Problem(name, "(file)",
                                           f"{size} bytes is larger than {MAX_FILE_BYTES}")])
            doc = parse_toml(path.read_bytes(), name)
            policies.append(parse_policy(doc, name, plugin_schemas))
        except PolicyError as exc:
            problems.extend(exc.problems)
        except OSError as exc:
            problems.append(Problem(name, "(file)", exc.strerror or str(exc)))
        except Exception as exc:
            # A defect of ours or of a library must not take the daemon's reload down with it.
            # The problem names it; the traceback is for a bug report (debug level, so that
            # `policy check` prints none).
            logger.debug("unexpected failure reading %s", path, exc_info=True)
            problems.append(Problem(name, "(file)", f"cannot be read: "
                                    f"{type(exc).__name__}: {shorten(str(exc))}"))
    if not problems:
        try:
            return build_policy_set(policies)
        except PolicyError as exc:
            problems.extend(exc.problems)
    raise PolicyError(problems)


@dataclass
class PolicyStore:
    """The policy set in force and the problems of the last load.

    :param dirs: search path, lowest precedence first
    :param plugin_schemas: plugin settings schemas (from the plugin manager)
    :param warn: what is legal but probably not meant in a valid set, one line each (e.g.
        :func:`audiopolicyd.pluginmanager.unenabled_options`); logged as warnings, kept in
        :attr:`warnings`
    """

    dirs: list[Path]
    plugin_schemas: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    warn: Callable[[PolicySet], list[str]] | None = None
    current: PolicySet | None = None
    problems: list[Problem] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def reload(self) -> bool:
        """Read the search path again.

        :returns: True when a new set is in force; False when problems were found (they are in
            :attr:`problems` and logged) and the last good set stays in force
        :raises PolicyError: when there is no last good set to keep (the first load failed)
        """
        files = find_files(self.dirs)
        try:
            new = load_files(files, self.plugin_schemas)
        except PolicyError as exc:
            self.problems = exc.problems
            for problem in exc.problems:
                logger.error("policy problem: %s", problem)
            if self.current is None:
                raise
            logger.error("policies not reloaded: %d problem(s); the last good set stays in force",
                         len(exc.problems))
            return False
        self.current, self.problems, self.files = new, [], files
        logger.info("policies loaded: %s", ", ".join(str(f) for f in files))
        self.warnings = self.warn(new) if self.warn else []
        for warning in self.warnings:
            logger.warning("policy warning: %s", warning)
        return True


# -- checking offline (``audiopolicyctl policy check``, ``audiopolicyd --check-config``) ------

@dataclass(frozen=True)
class PolicyCheck:
    """What an offline check found.

    :param files: the files in force, in the order they are read
    :param problems: every problem of them (empty: valid)
    :param warnings: what is legal but probably not meant, one line each (a valid set only)
    """

    files: list[Path]
    problems: list[Problem]
    warnings: list[str] = field(default_factory=list)


def check_policies(dirs: Sequence[Path], files: Sequence[Path] = (),
                   plugin_schemas: Mapping[str, Mapping[str, Any]] | None = None,
                   warn: Callable[[PolicySet], list[str]] | None = None) -> PolicyCheck:
    """Validate the search path *dirs* offline, each of *files* replacing the file of its name
    (an empty one masks it): the one validation path of ``audiopolicyctl policy check`` and
    ``audiopolicyd --check-config``, the same as a reload (:meth:`PolicyStore.reload`) reads.

    :param plugin_schemas: plugin settings schemas (from the plugin manager)
    :param warn: as :class:`PolicyStore`'s
    """
    found = find_files(dirs, files)
    try:
        policies = load_files(found, plugin_schemas or {})
    except PolicyError as exc:
        return PolicyCheck(found, list(exc.problems))
    return PolicyCheck(found, [], warn(policies) if warn else [])


def print_check(check: PolicyCheck, as_json: bool = False, list_files: bool = False) -> int:
    """Print a :class:`PolicyCheck`, as both commands do.

    Text: each problem as ``file: key.path: message`` on stdout and their count on stderr; or
    ``valid: N policy file(s)``, and with *list_files* a line ``policies valid: FILE, ...``
    (``--check-config``'s, read by scripts); each warning as ``warning: ...`` on stderr. JSON:
    ``{"valid", "files", "problems": [{"file", "path", "message"}], "warnings": [...]}``.

    :returns: the exit status: 0 valid, 1 not
    """
    problems = check.problems
    if as_json:
        print(json.dumps({"valid": not problems, "files": [str(f) for f in check.files],
                          "problems": [{"file": p.file, "path": p.path, "message": p.message}
                                       for p in problems],
                          "warnings": check.warnings}, indent=2))
    elif problems:
        for p in problems:
            print(p)
        print(f"{len(problems)} problem(s)", file=sys.stderr)
    else:
        print(f"valid: {len(check.files)} policy file(s)")
        if list_files:
            print("policies valid: " + ", ".join(str(f) for f in check.files))
        for warning in check.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    return 1 if problems else 0
