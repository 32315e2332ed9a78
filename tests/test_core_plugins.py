"""The plugin system: loading, blocking, conflicts, overrides and the ``plugins`` command."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Generator
from importlib import metadata
from typing import Any

import pluggy
import pytest
from click.testing import CliRunner

import rcingest
from rcingest.cli import cli
from rcingest.errors import PluginError
from rcingest.plugins import Registry, describe_plugins, make_plugin_manager
from tests.conftest import CounterSource, MemorySink, SuffixEnricher, TestComponents


def _plugin(**hooks: Any) -> object:
    """A plugin object with the given hook implementations."""
    ns = type("P", (), {})
    for name, fn in hooks.items():
        setattr(
            ns,
            name,
            staticmethod(
                rcingest.hookimpl(**fn[1])(fn[0])
                if isinstance(fn, tuple)
                else rcingest.hookimpl(fn)
            ),
        )
    return ns()


def test_hook_register_sources() -> None:
    def register_sources(register: Any) -> None:
        register("mine", CounterSource)

    manager = make_plugin_manager(
        load_entrypoints=False, extra=[("p", _plugin(register_sources=register_sources))]
    )
    assert Registry(manager).get("source", "mine").component is CounterSource


def test_hook_register_enrichers() -> None:
    def register_enrichers(register: Any) -> None:
        register("mine", SuffixEnricher)

    manager = make_plugin_manager(
        load_entrypoints=False, extra=[("p", _plugin(register_enrichers=register_enrichers))]
    )
    assert Registry(manager).get("enricher", "mine").component is SuffixEnricher


def test_hook_register_sinks() -> None:
    def register_sinks(register: Any) -> None:
        register("mine", MemorySink)

    manager = make_plugin_manager(
        load_entrypoints=False, extra=[("p", _plugin(register_sinks=register_sinks))]
    )
    assert Registry(manager).get("sink", "mine").component is MemorySink


def test_hook_register_commands() -> None:
    import click

    def register_commands(cli: click.Group) -> None:
        @cli.command(name="hello-test")
        def hello() -> None:
            click.echo("hello from a plugin")

    manager = make_plugin_manager(extra=[("p", _plugin(register_commands=register_commands))])
    from rcingest.cli import build_cli

    group = build_cli(manager)
    try:
        result = CliRunner().invoke(group, ["hello-test"], obj=manager)
        assert result.output == "hello from a plugin\n"
    finally:
        group.commands.pop("hello-test", None)


def test_builtins_come_from_rcingest_entry_points() -> None:
    eps = [ep for ep in metadata.distribution("rcingest").entry_points if ep.group == "rcingest"]
    assert eps, "rcingest registers its built-ins through its own entry points"
    manager = make_plugin_manager(only_builtins=True)
    assert {info.distribution for info in manager.info.values()} == {"rcingest"}
    assert "records_file" in Registry(manager).types("source")


def test_third_party_plugin_is_listed() -> None:
    manager = make_plugin_manager()
    described = describe_plugins(manager, include_builtins=False)
    jsonl = [p for p in described if p["distribution"] == "rcingest-jsonl"]
    assert jsonl and jsonl[0]["types"] == {"sink": ["jsonl"]}
    assert jsonl[0]["hooks"] == ["register_sinks"]
    assert all(p["distribution"] != "rcingest" for p in described)


def test_plugins_command_json(manager: Any) -> None:
    result = CliRunner().invoke(cli, ["plugins", "--all"], obj=make_plugin_manager())
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    dists = {p["distribution"] for p in data}
    assert {"rcingest", "rcingest-jsonl"} <= dists
    for entry in data:
        assert set(entry) == {"name", "distribution", "version", "module", "hooks", "types"}
    without = json.loads(CliRunner().invoke(cli, ["plugins"], obj=make_plugin_manager()).output)
    assert "rcingest" not in {p["distribution"] for p in without}


def test_blocking_a_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RCINGEST_DISABLE_PLUGINS", "rcingest-jsonl, other")
    registry = Registry(make_plugin_manager())
    assert "jsonl" not in registry.types("sink")
    assert "records_file" in registry.types("source")


def test_a_plugin_that_fails_to_import_names_its_distribution(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = metadata.EntryPoint(name="broken", value="rcingest_no_such_module", group="rcingest")
    real = metadata.entry_points

    def fake_entry_points(**kw: Any) -> Any:
        eps = list(real(**kw))
        return [*eps, broken]

    monkeypatch.setattr(metadata, "entry_points", fake_entry_points)
    with pytest.raises(PluginError) as info:
        make_plugin_manager()
    message = str(info.value)
    assert "'broken'" in message and "failed to load" in message
    assert "RCINGEST_DISABLE_PLUGINS=broken" in message
    monkeypatch.setenv("RCINGEST_DISABLE_PLUGINS", "broken")
    make_plugin_manager()  # blocked by entry-point name: loads fine


def test_duplicate_type_names_both_plugins() -> None:
    def one(register: Any) -> None:
        register("dup", MemorySink)

    extra = [("first", _plugin(register_sinks=one)), ("second", _plugin(register_sinks=one))]
    with pytest.raises(PluginError) as info:
        Registry(make_plugin_manager(load_entrypoints=False, extra=extra))
    assert "'first'" in str(info.value) and "'second'" in str(info.value)


def test_overridable_builtin_loses_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def builtin(register: Any) -> None:
        register("store", MemorySink, overridable=True)

    class Other(MemorySink):
        pass

    def third(register: Any) -> None:
        register("store", Other)

    caplog.set_level(logging.INFO, "rcingest.plugins")
    for order in ([("b", builtin), ("t", third)], [("t", third), ("b", builtin)]):
        extra = [(name, _plugin(register_sinks=fn)) for name, fn in order]
        registry = Registry(make_plugin_manager(load_entrypoints=False, extra=extra))
        assert registry.get("sink", "store").component is Other
    assert "overridden" in caplog.text


def test_unknown_hook_fails_check_pending() -> None:
    class Bad:
        @rcingest.hookimpl
        def register_sourcez(self, register: Any) -> None:  # typo of register_sources
            pass

    with pytest.raises(PluginError, match="unknown hook"):
        make_plugin_manager(load_entrypoints=False, extra=[("bad", Bad())])


def test_each_manager_is_fresh() -> None:
    a = make_plugin_manager(load_entrypoints=False, extra=[("t", TestComponents())])
    b = make_plugin_manager(load_entrypoints=False)
    assert "test_counter" in Registry(a).types("source")
    assert "test_counter" not in Registry(b).types("source")


def test_unknown_type_lists_installed_and_hints_install() -> None:
    empty = Registry(make_plugin_manager(load_entrypoints=False))
    with pytest.raises(Exception, match=r"installed types: \[\]; is rcingest installed"):
        empty.get("source", "bitbucket_rest")


def test_async_hook_implementations_are_refused() -> None:
    class Async:
        @rcingest.hookimpl
        async def register_sinks(self, register: Any) -> None:
            register("never", MemorySink)

    with pytest.raises(PluginError, match="must not be 'async def'"):
        make_plugin_manager(load_entrypoints=False, extra=[("async-plugin", Async())])


def test_builtin_story_keys_can_be_overridden_by_a_third_party() -> None:
    from rcingest.default_plugins.story_keys import StoryKeysEnricher

    def register_enrichers(register: Any) -> None:
        register("story_keys", SuffixEnricher)

    builtin = Registry(make_plugin_manager())
    assert builtin.get("enricher", "story_keys").component is StoryKeysEnricher
    extra = [("house-rules", _plugin(register_enrichers=register_enrichers))]
    registry = Registry(make_plugin_manager(extra=extra))
    assert registry.get("enricher", "story_keys").component is SuffixEnricher


def test_builtin_sinks_are_not_overridable() -> None:
    def register_sinks(register: Any) -> None:
        register("database", MemorySink)

    with pytest.raises(PluginError, match="registered twice"):
        Registry(make_plugin_manager(extra=[("x", _plugin(register_sinks=register_sinks))]))


class _Wrappers:
    """Hook wrappers of both pluggy styles, recording what each call hands to ``register``."""

    def __init__(self) -> None:
        self.new_style: list[str] = []
        self.old_style: list[str] = []

    @rcingest.hookimpl(wrapper=True)
    def register_sinks(self, register: Any) -> Generator[None, None, None]:
        self.new_style.append(repr(register))
        return (yield)

    @rcingest.hookimpl(hookwrapper=True)
    def register_sources(self, register: Any) -> Generator[None, Any, None]:
        self.old_style.append(repr(register))
        yield


def test_hook_wrappers_see_every_registration_call() -> None:
    def sinks(register: Any) -> None:
        register("mine", MemorySink)

    def sources(register: Any) -> None:
        register("mine", CounterSource)

    wrappers = _Wrappers()
    extra = [
        ("wrappers", wrappers),
        ("a", _plugin(register_sinks=sinks, register_sources=sources)),
        ("b", _plugin(register_sinks=lambda register: register("other", MemorySink))),
    ]
    registry = Registry(make_plugin_manager(load_entrypoints=False, extra=extra))
    # One call per implementing plugin, each wrapped, in registration order.
    assert wrappers.new_style == [
        "<register sinks of plugin 'a' ((registered in process))>",
        "<register sinks of plugin 'b' ((registered in process))>",
    ]
    assert wrappers.old_style == ["<register sources of plugin 'a' ((registered in process))>"]
    # The wrappers are not implementations: they register nothing and own no type.
    assert {r.plugin for r in registry.types("sink").values()} == {"a", "b"}
    assert registry.get("source", "mine").component is CounterSource


def test_hookcall_monitoring_sees_registration_calls() -> None:
    extra = [("a", _plugin(register_sinks=lambda register: register("mine", MemorySink)))]
    manager = make_plugin_manager(load_entrypoints=False, extra=extra)
    called: list[str] = []
    manager.pm.add_hookcall_monitoring(lambda name, impls, kw: called.append(name), lambda *a: None)
    Registry(manager)
    assert called == ["register_sinks"]


def test_trace_names_the_registration_hooks() -> None:
    env = {**os.environ, "RCINGEST_TRACE_PLUGINS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", "from rcingest.cli import main; main()", "plugins"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for hook in ("register_sources", "register_enrichers", "register_sinks"):
        assert f"{hook} [hook]" in done.stderr
    # Each traced call says which plugin it is for.
    assert "<register sinks of plugin 'jsonl' (rcingest-jsonl)>" in done.stderr
    quiet = subprocess.run(
        [sys.executable, "-c", "from rcingest.cli import main; main()", "plugins"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "RCINGEST_TRACE_PLUGINS"},
        timeout=60,
        check=False,
    )
    assert quiet.returncode == 0 and "[hook]" not in quiet.stderr


def test_a_renamed_implementation_is_credited_to_its_own_plugin() -> None:
    class Renamed:
        @rcingest.hookimpl(specname="register_sinks")
        def my_sinks(self, register: Any) -> None:
            register("renamed", MemorySink)

    extra = [
        ("renamed", Renamed()),
        ("plain", _plugin(register_sinks=lambda register: register("plain", MemorySink))),
    ]
    manager = make_plugin_manager(load_entrypoints=False, extra=extra)
    major, minor = (int(part) for part in pluggy.__version__.split(".")[:2])
    if (major, minor) < (1, 7):
        # Older pluggy cannot leave a renamed implementation out of a subset call.
        with pytest.raises(PluginError, match=r"'renamed'.*specname"):
            Registry(manager)
        return
    registry = Registry(manager)
    assert {n: r.plugin for n, r in registry.types("sink").items()} == {
        "renamed": "renamed",
        "plain": "plain",
    }
