"""Name -> class registries, with plugins found through entry points.

Built-in parts register themselves with a decorator; a third-party package
exposes its own under an entry-point group (``siamkit.encoders``,
``siamkit.miners``) and is then found by name once installed, with no import in
user code::

    # pyproject.toml of a plugin package
    [project.entry-points."siamkit.encoders"]
    tiny = "my_plugin:TinyEncoder"

Examples:
    >>> from siamkit.registry import Registry
    >>> colours = Registry("colour", group="example.colours")
    >>> @colours.register("red")
    ... class Red:
    ...     pass
    >>> colours.get("red").__name__, colours.names()
    ('Red', ['red'])
"""

from __future__ import annotations

import inspect
import warnings
from importlib import metadata
from typing import Any, Generic, TypeVar

from siamkit.exceptions import ConfigError, UnknownComponentError

T = TypeVar("T")


def _entry_points(group: str) -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group=group))


class Registry(Generic[T]):
    """A mapping from names to classes of one kind (encoders, miners...).

    Args:
        kind: What the registry holds, for error messages ("encoder").
        group: The entry-point group scanned for plugins.
        base: If given, every registered class must subclass it.
    """

    def __init__(self, kind: str, group: str, base: type | None = None) -> None:
        self.kind = kind
        self.group = group
        self.base = base
        self._classes: dict[str, type[T]] = {}
        self._plugins_loaded = False

    def register(self, name: str | type[T] | None = None, *, overwrite: bool = False) -> Any:
        """Register a class under ``name`` (default: the class's ``name`` attribute
        or its lower-cased class name). Use as ``@register`` or ``@register("name")``.
        """
        if isinstance(name, type):  # bare @register
            return self._add(name, None, overwrite)

        def decorator(cls: type[T]) -> type[T]:
            return self._add(cls, name, overwrite)

        return decorator

    def _add(self, cls: type[T], name: str | None, overwrite: bool) -> type[T]:
        if self.base is not None and not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise ConfigError(
                f"cannot register {cls!r} as an {self.kind}: it must subclass "
                f"{self.base.__module__}.{self.base.__qualname__}"
            )
        # __dict__, not getattr: a subclass must not inherit its parent's name.
        key = name or cls.__dict__.get("registry_name") or cls.__name__.lower()
        existing = self._classes.get(key)
        if existing is not None and existing is not cls and not overwrite:
            raise ConfigError(
                f"an {self.kind} named {key!r} is already registered "
                f"({existing.__module__}.{existing.__qualname__}); pick another name "
                "or pass overwrite=True"
            )
        self._classes[key] = cls
        cls.registry_name = key  # type: ignore[attr-defined]
        return cls

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in _entry_points(self.group):
            if ep.name in self._classes:
                continue
            try:
                cls = ep.load()
                self._add(cls, ep.name, overwrite=False)
            except Exception as err:  # a broken plugin must not break siamkit
                warnings.warn(
                    f"siamkit: could not load {self.kind} plugin {ep.name!r} ({ep.value}): {err}",
                    RuntimeWarning,
                    stacklevel=3,
                )

    def reload_plugins(self) -> None:
        """Scan the entry points again (after installing a plugin in a running process)."""
        self._plugins_loaded = False
        self._load_plugins()

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``; ``UnknownComponentError`` if there is none."""
        if name not in self._classes:
            self._load_plugins()
        try:
            return self._classes[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise UnknownComponentError(
                f"no {self.kind} named {name!r}; known: {known}. Register your own with "
                f"@register_{self.kind} or install a plugin that declares it under the "
                f"{self.group!r} entry-point group"
            ) from None

    def create(self, name: str, **kwargs: Any) -> T:
        """Instantiate the class registered as ``name`` with ``kwargs``.

        Raises:
            UnknownComponentError: no class is registered as ``name``.
            ConfigError: ``kwargs`` do not fit the class's constructor.
        """
        cls = self.get(name)
        _check_arguments(cls, name, self.kind, kwargs)
        try:
            return cls(**kwargs)
        except ConfigError:
            raise
        except (TypeError, ValueError) as err:  # a value of the wrong type or range
            raise ConfigError(
                f"cannot build the {self.kind} {name!r} with {kwargs}: {err}"
            ) from None

    def names(self) -> list[str]:
        """All registered names, plugins included, sorted."""
        self._load_plugins()
        return sorted(self._classes)

    def name_of(self, cls: type) -> str | None:
        """The name ``cls`` is registered under, or None."""
        for key, value in self._classes.items():
            if value is cls:
                return key
        return None

    def check_arguments(self, name: str, kwargs: dict[str, Any]) -> None:
        """Refuse ``kwargs`` the class registered as ``name`` does not take, naming them.

        Raises:
            UnknownComponentError: no class is registered as ``name``.
            ConfigError: an argument the constructor does not take.
        """
        _check_arguments(self.get(name), name, self.kind, kwargs)

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._classes


def _check_arguments(cls: type, name: str, kind: str, kwargs: dict[str, Any]) -> None:
    # Binding first tells a wrong argument name from a TypeError inside __init__.
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return
    try:
        signature.bind(**kwargs)
    except TypeError as err:
        accepted = ", ".join(signature.parameters) or "none"
        raise ConfigError(
            f"the {kind} {name!r} does not take these arguments ({err}); it accepts: {accepted}"
        ) from None
