"""The layout's import direction (README "Layout"): imports point one way, never up.

Every module of the package has a layer; a module may import only from its own layer or
a lower one. The programs that run beside the daemon (the Python client, the prompt agents,
audiopolicyctl) never import the daemon's runtime, its D-Bus service or its composition root,
and nothing in the daemon imports them. Plugins see the hookspecs, the model and the policy
types only.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "daemon"
PLUGINS = ROOT / "plugins"

#: The layers, bottom first; a module's layer is that of its longest matching prefix.
LAYERS: tuple[tuple[str, ...], ...] = (
    # 0: plain data and names, no project imports
    ("model", "names", "identity", "logsetup", "buswriter", "microphone.stores",
     "microphone.privacy", "route"),
    # 1: errors and the bounds of what clients send
    ("errors", "limits"),
    # 2: the pure core: parsing policies, effects, hooks; a recording's params, detectors,
    #    encoding, status and state machine; SWML documents
    ("policy", "effects", "hookspecs", "routing", "recorder", "swml"),
    # 3: the pure core: decisions, sessions, journal, plugin host
    ("policystore", "pluginmanager", "engine", "sessions", "journal", "explain",
     "routing.decide"),
    # 4: the domain beside the runtime: app sessions, the microphone gate, backends, MPRIS,
    #    logind's suspend and resume, and the offline simulation (which runs app sessions as
    #    the daemon does)
    ("appsessions", "sessionroutes", "microphone", "backends", "mpris", "sleep", "simulate",
     "recorder.capture", "recorder.recorders"),
    # 5: the runtime, and the microphone gate's enforcement, which it builds (kept beside the
    #    microphone code: it reads the runtime's mirror and writes through its actuator)
    ("runtime", "microphone.gate"),
    # 6: the D-Bus adapter
    ("dbus",),
    # 7: the composition root
    ("app", "__main__"),
)
#: Programs beside the daemon, and what of the daemon they must not import.
PROGRAMS = ("client", "agents", "ctl")
DAEMON_ONLY = ("runtime", "dbus", "app", "backends", "microphone.gate", "microphone.access",
               "microphone.broker", "appsessions", "sessionroutes", "mpris", "sleep",
               "recorder.capture",
               "recorder.recorders")
#: What a plugin may import from the package.
PLUGIN_MAY_IMPORT = ("", "model", "policy", "hookspecs", "route", "routing")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, name: str, is_package: bool) -> set[str]:
    """Project modules ``path`` imports, relative to ``audiopolicyd`` ('' for the package)."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                candidates = [target] if node.module else \
                    [".".join(filter(None, (target, a.name))) for a in node.names]
            elif (node.module or "").split(".")[0] == "audiopolicyd":
                target = node.module.partition(".")[2]
                candidates = [target]
            else:
                continue
            found.update(candidates)
        elif isinstance(node, ast.Import):
            found.update(a.name.partition(".")[2] for a in node.names
                         if a.name.split(".")[0] == "audiopolicyd")
    return found


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_of(name: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for layer, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if _matches(name, prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), layer)
    return None if best is None else best[1]


def _modules(root: Path):
    for path in sorted(root.rglob("*.py")):
        name = _module_name(path, root)
        yield path, name, _imports(path, name, path.name == "__init__.py")


def test_every_module_of_the_package_has_a_place():
    unplaced = [name for _, name, _ in _modules(PACKAGE)
                if name and layer_of(name) is None
                and not any(_matches(name, p) for p in PROGRAMS)]
    assert unplaced == []


def test_no_import_points_up():
    up = []
    for _, name, imports in _modules(PACKAGE):
        if not name or any(_matches(name, p) for p in PROGRAMS):
            continue
        for target in imports:
            if target in ("", "__version__"):
                continue
            if any(_matches(target, p) for p in PROGRAMS):
                up.append(f"{name} -> {target} (a program beside the daemon)")
            elif layer_of(target) is not None and layer_of(target) > layer_of(name):
                up.append(f"{name} (layer {layer_of(name)}) -> {target} "
                          f"(layer {layer_of(target)})")
    assert up == []


def test_programs_beside_the_daemon_do_not_import_its_insides():
    wrong = [f"{name} -> {target}" for _, name, imports in _modules(PACKAGE)
             if any(_matches(name, p) for p in PROGRAMS)
             for target in imports if any(_matches(target, d) for d in DAEMON_ONLY)]
    assert wrong == []


def test_plugins_see_the_hookspecs_the_model_and_the_policy_types_only():
    wrong = [f"plugins.{path.stem} -> {target}" for path in sorted(PLUGINS.rglob("*.py"))
             for target in _imports(path, "plugins." + path.stem, False)
             if not _matches(target, "plugins")
             and target.split(".")[0] not in PLUGIN_MAY_IMPORT]
    assert wrong == []


def test_the_check_itself_sees_an_import_pointing_up(tmp_path):
    bad = tmp_path / "engine.py"
    bad.write_text("from .runtime.passes import Pass\nfrom audiopolicyd.dbus import service\n")
    imports = _imports(bad, "engine", False)
    assert imports == {"runtime.passes", "dbus"}
    assert all(layer_of(t) > layer_of("engine") for t in imports)
