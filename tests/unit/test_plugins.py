"""Hookspecs are documented and plugin docs are true: a hook whose documented arguments drift
from its signature fails here, as Datasette's test suite does for its hooks."""

from __future__ import annotations

import importlib
import inspect
import re
import sys

import pytest

from audiopolicyd import hookspecs
from audiopolicyd.pluginmanager import (
    BUILTIN, call_hook, make_plugin_manager, plugin_settings_schemas,
)
from audiopolicyd.policy import parse_policy, parse_toml

SPECS = [f for name, f in vars(hookspecs).items()
         if inspect.isfunction(f) and hasattr(f, "audiopolicyd_spec")]


def test_there_are_hookspecs():
    assert {f.__name__ for f in SPECS} == {"register_policy_settings", "classify_stream",
                                           "decide_interaction", "mixes_with_others",
                                           "decide_session_interaction",
                                           "register_session_options",
                                           "ask_microphone_on_activation",
                                           "choose_route", "react_to_route_change",
                                           "propose_processing"}


@pytest.mark.parametrize("spec", SPECS, ids=lambda f: f.__name__)
def test_every_hookspec_documents_when_it_fires_its_params_and_result(spec):
    doc = inspect.getdoc(spec)
    params = list(inspect.signature(spec).parameters)
    assert doc and doc.splitlines()[0].endswith("."), "one-line summary"
    assert re.search(r"\bcalled\b", doc, re.I), "says when it fires"
    documented = re.findall(r":param (\w+):", doc)
    assert documented == params, "every argument documented, in order"
    assert ":returns:" in doc
    firstresult = spec.audiopolicyd_spec["firstresult"]
    assert ("first non-None result" in doc) == firstresult


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_plugin_docstring_example_is_a_valid_policy_snippet(name):
    module = importlib.import_module(name)
    doc = inspect.getdoc(module)
    example = doc.split("Example::", 1)[1]
    snippet = "\n".join(line.strip() for line in example.strip().splitlines())
    pm = make_plugin_manager(load_entry_points=False)
    doc_table = parse_toml(snippet, "example")
    base = {"schema": 1, "category": "record", "priority": 60, "mixes_with_others": False,
            "activation": {"others": "silence"}}
    policy = parse_policy({**base, **doc_table}, "example", plugin_settings_schemas(pm))
    assert policy.plugins


def test_two_plugins_declaring_one_table_is_an_error():
    from audiopolicyd import hookimpl

    class Dup:
        @hookimpl
        def register_policy_settings(self):
            return {"record": {}}

    pm = make_plugin_manager(load_entry_points=False)
    pm.register(Dup(), name="dup")
    with pytest.raises(ValueError, match="'record' is declared twice"):
        plugin_settings_schemas(pm)


def test_call_hook_collects_results_and_skips_a_raising_plugin(caplog):
    from audiopolicyd import hookimpl

    class Bad:
        @hookimpl
        def register_policy_settings(self):
            raise RuntimeError("boom")

    pm = make_plugin_manager(load_entry_points=False)
    pm.register(Bad(), name="bad")
    results = call_hook(pm, "register_policy_settings")
    assert any("record" in r for r in results)
    assert "plugin 'bad' raised in hook register_policy_settings" in caplog.text


def install_fake_distribution(tmp_path, monkeypatch, dist, plugins):
    """An installed distribution ``dist`` whose ``audiopolicyd.plugins`` entry points are
    ``plugins``: ``(entry point name, module, source)``, a module with no source is missing.

    :returns: the module names, to drop from ``sys.modules`` afterwards
    """
    info = tmp_path / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[audiopolicyd.plugins]\n" + "".join(f"{name} = {module}\n"
                                             for name, module, _ in plugins))
    for _, module, source in plugins:
        if source is not None:
            (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    modules = [module for _, module, _ in plugins]
    for name in modules:
        monkeypatch.delitem(sys.modules, name, raising=False)
    return modules


def test_a_failing_entry_point_does_not_stop_the_next(tmp_path, monkeypatch, caplog):
    # One installed distribution with two plugins: the first fails to import, the second
    # must still be registered. Before: pluggy's load_setuptools_entrypoints stopped at the
    # first failure and the log said "continuing without it".
    modules = install_fake_distribution(tmp_path, monkeypatch, "apd-fake-plugins", [
        ("a_broken", "apd_fake_broken", "raise RuntimeError('broken at import')\n"),
        ("b_missing", "apd_fake_missing_module", None),
        ("c_good", "apd_fake_good",
         "from audiopolicyd import hookimpl\n\n"
         "@hookimpl\n"
         "def register_policy_settings():\n"
         "    return {'good': {'type': 'object'}}\n"),
        ("d_bad_hook", "apd_fake_bad_hook",
         "from audiopolicyd import hookimpl\n\n"
         "@hookimpl\n"
         "def classify_stream(stream, policies, not_an_argument):\n"
         "    return None\n"),
    ])

    pm = make_plugin_manager()
    try:
        assert pm.get_plugin("c_good") is not None
        assert pm.get_plugin("a_broken") is None and pm.get_plugin("b_missing") is None
        assert not [i for i in pm.hook.classify_stream.get_hookimpls()
                    if i.plugin_name == "d_bad_hook"]
        assert "good" in plugin_settings_schemas(pm)
        assert "plugin 'a_broken' (apd_fake_broken) of apd-fake-plugins failed to load; " \
               "continuing without it" in caplog.text
        assert "plugin 'b_missing' (apd_fake_missing_module)" in caplog.text
        assert pm.get_plugin("d_bad_hook") is None  # registered by name, then taken out
        assert "plugin 'd_bad_hook' (apd_fake_bad_hook)" in caplog.text
    finally:
        for name in modules:
            sys.modules.pop(name, None)


def test_a_plugin_with_an_unknown_hook_is_blocked_by_name_and_the_others_load(
        tmp_path, monkeypatch, caplog):
    # pluggy accepts a misspelt hook at register time and only check_pending() sees it, by
    # raising: the daemon would not start. Here it is blocked and logged; the next one loads.
    modules = install_fake_distribution(tmp_path, monkeypatch, "apd-fake-typo", [
        ("a_typo", "apd_fake_typo",
         "from audiopolicyd import hookimpl\n\n"
         "@hookimpl\n"
         "def decide_interation(trigger, victim, stream, interaction, policies):\n"
         "    return None\n"),
        ("b_fine", "apd_fake_fine",
         "from audiopolicyd import hookimpl\n\n"
         "@hookimpl\n"
         "def register_policy_settings():\n"
         "    return {'fine': {'type': 'object'}}\n"),
    ])
    try:
        pm = make_plugin_manager()
        assert pm.is_blocked("a_typo") and pm.get_plugin("a_typo") is None
        assert pm.get_plugin("b_fine") is not None and "fine" in plugin_settings_schemas(pm)
        assert pm.get_plugin("record") is not None
        assert "plugin 'a_typo' blocked: unknown hook 'decide_interation'" in caplog.text
    finally:
        for name in modules:
            sys.modules.pop(name, None)
