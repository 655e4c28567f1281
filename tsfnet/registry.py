"""One registry for every plugin kind.

Built-ins register with the `register` decorator; third-party packages declare an
entry point in the group ``tsfnet.<kind>`` (e.g. ``tsfnet.fusion``) pointing at the
object to register. Entry points are loaded lazily, the first time a kind is used.
A fusion must be a `FeatureFusion` or a `Network`, a stage a `Stage`: a plugin that is
not is refused when it registers. The kind `trainer` is the old name of `stage`
(still accepted, e.g. for the entry-point group ``tsfnet.trainer``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, TypeVar

from tsfnet.errors import TsfnetError

KINDS = ("fusion", "head", "normalization", "planner", "loss", "stage")
ALIASES = {"trainer": "stage"}

# What a plugin of a kind must subclass ("module:Class"), checked when it registers.
BASES = {
    "fusion": ("tsfnet.fusion.base:FeatureFusion", "tsfnet.fusion.base:Network"),
    "stage": ("tsfnet.training.stages:Stage",),
}

# Modules whose import registers the built-in plugins.
_BUILTIN_MODULES = (
    "tsfnet.fusion",
    "tsfnet.fusion.mmgan",
    "tsfnet.fusion.hinet",
    "tsfnet.fusion.pix2pix",
    "tsfnet.fusion.seq2seq_avg",
    "tsfnet.fusion.seq2seq_early",
    "tsfnet.fusion.tsf_ms",
    "tsfnet.heads",
    "tsfnet.preprocessing.normalization",
    "tsfnet.planning.planner",
    "tsfnet.training.losses",
    "tsfnet.training.stages",
    "tsfnet.training.adversarial",
)

T = TypeVar("T")


@dataclass(frozen=True)
class Plugin:
    kind: str
    name: str
    obj: Any
    provider: str


class UnknownPluginError(TsfnetError):
    pass


class Registry:
    def __init__(self) -> None:
        self._plugins: dict[str, dict[str, Plugin]] = {kind: {} for kind in KINDS}
        self._loaded = False

    def register(self, kind: str, name: str, provider: str = "tsfnet") -> Callable[[T], T]:
        """Decorator: `@registry.register("fusion", "tsf")`."""
        kind = self._check_kind(kind)

        def decorator(obj: T) -> T:
            self.add(kind, name, obj, provider)
            return obj

        return decorator

    def add(self, kind: str, name: str, obj: Any, provider: str) -> None:
        kind = self._check_kind(kind)
        existing = self._plugins[kind].get(name)
        if existing is not None and existing.obj is not obj:
            raise TsfnetError(f"{kind} plugin '{name}' from {provider} clashes with the one from {existing.provider}")
        _check_base(kind, name, obj, provider)
        if kind == "stage":  # a stage is named by its registration
            own = obj.__dict__.get("name")
            if own and own != name:
                raise TsfnetError(f"stage '{name}' from {provider} is already registered as '{own}'")
            obj.name = name
        self._plugins[kind][name] = Plugin(kind, name, obj, provider)

    def get(self, kind: str, name: str) -> Any:
        kind = self._check_kind(kind)
        self.load()
        plugin = self._plugins[kind].get(name)
        if plugin is None:
            known = ", ".join(sorted(self._plugins[kind])) or "none"
            raise UnknownPluginError(f"unknown {kind} '{name}'; known: {known}")
        return plugin.obj

    def names(self, kind: str) -> list[str]:
        kind = self._check_kind(kind)
        self.load()
        return sorted(self._plugins[kind])

    def items(self, kind: str) -> list[tuple[str, Any]]:
        """(name, object) of a kind in registration order (built-ins first)."""
        kind = self._check_kind(kind)
        self.load()
        return [(name, plugin.obj) for name, plugin in self._plugins[kind].items()]

    def plugins(self) -> list[Plugin]:
        self.load()
        return [p for kind in KINDS for _, p in sorted(self._plugins[kind].items())]

    def refresh(self) -> None:
        """Scan entry points again (after installing a plugin into a running session)."""
        self._loaded = False
        self.load()

    def load(self) -> None:
        """Import the built-ins and every installed entry point, once."""
        if self._loaded:
            return
        self._loaded = True
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)
        groups = [(kind, kind) for kind in KINDS] + [(alias, kind) for alias, kind in ALIASES.items()]
        for group, kind in groups:
            for ep in entry_points(group=f"tsfnet.{group}"):
                provider = ep.dist.name if ep.dist is not None else ep.value.split(":")[0]
                try:
                    obj = ep.load()
                except Exception as exc:  # a broken third-party plugin must not break tsfnet
                    raise TsfnetError(f"entry point {ep.name} ({provider}) failed to load: {exc}") from exc
                self.add(kind, ep.name, obj, provider)

    @staticmethod
    def _check_kind(kind: str) -> str:
        kind = ALIASES.get(kind, kind)
        if kind not in KINDS:
            raise TsfnetError(f"unknown plugin kind '{kind}'; known: {', '.join(KINDS)}")
        return kind


def _check_base(kind: str, name: str, obj: Any, provider: str) -> None:
    bases = [getattr(importlib.import_module(m), c) for m, c in (b.split(":") for b in BASES.get(kind, ()))]
    if bases and not (isinstance(obj, type) and issubclass(obj, tuple(bases))):
        wanted = " or ".join(f"{b.__module__}.{b.__name__}" for b in bases)
        raise TsfnetError(f"{kind} plugin '{name}' from {provider} must subclass {wanted}")


registry = Registry()
register = registry.register
