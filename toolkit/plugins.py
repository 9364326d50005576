"""The plugin manager: every plugin, built-in or not, comes from the entry-point group "aitk".

Each entry point loads on its own; one that fails is reported and the rest keep working.
AITK_STRICT_PLUGINS=1 makes a load error fatal; AITK_LOAD_PLUGINS=a,b loads only those."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, entry_points, packages_distributions, version
from typing import Any

import pluggy

from applied_aitk import hookspecs
from applied_aitk.console import get_logger
from applied_aitk.errors import AitkError
from applied_aitk.extras import DISTRIBUTION

pm = pluggy.PluginManager("aitk")
pm.add_hookspecs(hookspecs)
load_errors: dict[str, str] = {}
logger = get_logger(__name__)
_loaded = False
_registered_from: dict[str, str] = {}  # plugin name -> the entry point value it was loaded from
_shadowed: dict[str, str] = {}  # entry point value -> why it was not loaded (its name taken by another plugin)


def load_plugins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    only = {n.strip() for n in os.environ.get("AITK_LOAD_PLUGINS", "").split(",") if n.strip()}
    for ep in sorted(entry_points(group="aitk"), key=_third_party):  # built-in use cases keep their names
        if only and ep.name not in only:
            continue
        if pm.get_plugin(ep.name) is not None:
            if _registered_from.get(ep.name, ep.value) != ep.value:  # another package under a taken name: was dropped silently
                _shadowed[ep.value] = f"plugin name {ep.name!r} is already taken by {_registered_from[ep.name]}; this one is not loaded; give it another name"
                logger.warning(f"plugin {ep.name!r} ({ep.value}): {_shadowed[ep.value]}")
            continue
        try:
            pm.register(ep.load(), name=ep.name)
            _registered_from[ep.name] = ep.value
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # SystemExit at import too: a plugin must not take the CLI down
            load_errors[ep.name] = f"{type(e).__name__}: {e}"
            if os.environ.get("AITK_STRICT_PLUGINS") == "1":
                raise AitkError(f"plugin {ep.name!r} failed to load: {load_errors[ep.name]}") from e
            logger.warning(f"plugin {ep.name!r} failed to load: {load_errors[ep.name]}")


def _third_party(ep) -> bool:
    return ep.dist is None or ep.dist.name != DISTRIBUTION


_usecases: dict | None = None


def get_usecases() -> dict:
    """Every registered UseCase by name; ``usecase.plugin`` names the plugin that registered it."""
    global _usecases
    if _usecases is None:
        load_plugins()
        _usecases = {}
        for name, plugin in pm.list_name_plugin():
            def register(usecase, _plugin=name):
                taken = _usecases.get(usecase.name)
                if taken is not None and taken is not usecase:
                    clash = f"use case {usecase.name!r} is already registered by plugin {taken.plugin!r}; this one is not loaded"
                    load_errors[_plugin] = "; ".join(filter(None, [load_errors.get(_plugin), clash]))
                    logger.warning(f"plugin {_plugin!r}: {clash}")
                    return
                usecase.plugin = _plugin
                _usecases[usecase.name] = usecase

            hook = getattr(plugin, "register_usecases", None)
            try:
                if hook is not None:
                    hook(register=register)
            except KeyboardInterrupt:
                raise
            except BaseException as e:
                load_errors[name] = f"{type(e).__name__}: {e}"
                logger.warning(f"plugin {name!r} failed to register: {load_errors[name]}")
    return _usecases


COMMAND_NAME = re.compile(r"[a-z][a-z0-9_-]*")


def name_taken(app: Any, name: str) -> str | None:
    """Why a new plugin ``aitk-NAME`` cannot be called ``name`` (None when it can): a core command
    of the CLI ``app``, or the name of a plugin or use case of another installed distribution
    (one from ``aitk-NAME`` itself is replaced when the new package is installed). Such a plugin
    would install and never load."""
    core = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
    if name in core | {g.name for g in app.registered_groups} - set(get_usecases()):
        return "a core command of aitk"
    owners = {ep.name: ep.dist.name if ep.dist else ep.value for ep in entry_points(group="aitk") if ep.value not in _shadowed}
    if name in get_usecases():
        owner = owners.get(get_usecases()[name].plugin, get_usecases()[name].plugin)
        return None if owner == f"aitk-{name}" else f"the use case of the installed {owner}"
    if name in owners and owners[name] != f"aitk-{name}":
        return f"the name of a plugin of the installed {owners[name]}"
    return None


def add_plugin_commands(app: Any, usecases: dict, add_usecase: Callable[[Any], None]) -> None:
    """Each use case's commands (``add_usecase``) and each plugin's own (``register_commands``) on
    the CLI ``app``, one at a time: a use case named like a core command (``serve``) or not as a
    command can be (``two words``), or one whose commands cannot be built (a missing ``summary``),
    is a load error of its plugin, reported on stderr and by `aitk plugins`, and leaves ``usecases``;
    the rest work."""
    core = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands} | {g.name for g in app.registered_groups}
    for name, usecase in list(usecases.items()):
        problem = None
        if name in core or not COMMAND_NAME.fullmatch(str(name)):
            problem = f"use case {name!r}: {'a core command of aitk' if name in core else 'not a command name (lower case letters, digits, - and _)'}; not loaded"
        else:
            try:
                add_usecase(usecase)
            except Exception as e:
                problem = f"use case {name!r}: its commands cannot be built ({type(e).__name__}: {e}); not loaded"
        if problem is not None:
            del usecases[name]  # not a use case of this run: `aitk plugins` and `serve` agree
            _plugin_error(getattr(usecase, "plugin", name), problem)
    for impl in pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(app=app)
        except KeyboardInterrupt:
            raise
        except BaseException as e:
            _plugin_error(impl.plugin_name, f"register_commands failed ({type(e).__name__}: {e})")


def _plugin_error(plugin: str, problem: str) -> None:
    load_errors[plugin] = "; ".join(filter(None, [load_errors.get(plugin), problem]))
    logger.warning(f"plugin {plugin!r}: {problem}")


def plugin_info() -> list[dict]:
    """Installed plugins: name, version, distribution, module, loaded (AITK_LOAD_PLUGINS may skip it), use cases, load error."""
    load_plugins()
    by_plugin: dict[str, list[str]] = {}
    for usecase in get_usecases().values():
        by_plugin.setdefault(usecase.plugin, []).append(usecase.name)
    rows = []
    for ep in entry_points(group="aitk"):
        dist = ep.dist
        rows.append({
            "name": ep.name,
            "version": dist.version if dist else None,
            "distribution": dist.name if dist else None,
            "module": ep.value,
            "loaded": pm.get_plugin(ep.name) is not None and ep.value not in _shadowed,
            "usecases": [] if ep.value in _shadowed else by_plugin.get(ep.name, []),
            "error": _shadowed.get(ep.value) or load_errors.get(ep.name),
        })
    return rows


def distribution_of(usecase) -> dict[str, str]:
    """``{"name", "version"}`` of the installed distribution that provides ``usecase``: the one whose
    entry point registered it, else (a use case made outside the plugin manager, in a script) the one
    that installs its top-level module: a distribution with an aitk entry point in that module, else
    any (``packages_distributions``, which reads every installed distribution's file list: about
    0.5 s of CPU). AitkError when it is not installed."""
    plugin = getattr(usecase, "plugin", None)
    module = type(usecase).__module__.split(".")[0]
    plugins = [ep for ep in entry_points(group="aitk") if ep.dist is not None]
    for ep in [ep for ep in plugins if ep.name == plugin] or [ep for ep in plugins if ep.value.split(".")[0] == module]:
        return {"name": ep.dist.name, "version": ep.dist.version}
    for name in packages_distributions().get(module, []):
        try:
            return {"name": name, "version": version(name)}
        except PackageNotFoundError:
            continue
    raise AitkError(f"use case {usecase.name!r}: its module {module!r} is not part of an installed distribution "
                    "(pip install it, e.g. pip install -e .), so a bundle cannot record the plugin's version")
