"""``imgtools.__all__`` states the public surface (as httpx's test of the same name does): it
names exactly the public members of the package, the lazy ones included, and every class that
appears in a public signature is among them, so a user never meets a type they cannot import.
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from collections.abc import Iterator

import imgtools
import imgtools.transport

#: Public members that are modules (set as attributes once imported), not names of the API.
_MODULES = types.ModuleType
#: Classes from elsewhere that public signatures use as they are.
_FOREIGN = ("builtins", "collections", "datetime", "pathlib", "os", "httpx", "pandas",
            "typing", "enum", "ssl", "threading", "numpy", "asyncio", "types")


def test_all_names_exactly_the_public_members() -> None:
    members = {name for name, value in vars(imgtools).items()
               if not name.startswith("_") and not isinstance(value, _MODULES)}
    lazy = set(imgtools._LAZY)
    assert imgtools.__all__ == sorted(imgtools.__all__)
    assert set(imgtools.__all__) == members | lazy
    assert not members & lazy  # loaded on first use only


def test_plumbing_lives_in_the_transport_module() -> None:
    for name in ("RetryTransport", "AsyncRetryTransport", "Stats"):
        assert name not in imgtools.__all__
        assert name in imgtools.transport.__all__
        assert getattr(imgtools.transport, name).__name__ == name


def _classes(hint: object) -> Iterator[type]:
    if isinstance(hint, type):
        yield hint
    if isinstance(hint, list):  # a Callable's parameters
        for arg in hint:
            yield from _classes(arg)
    for arg in typing.get_args(hint):
        yield from _classes(arg)
    origin = typing.get_origin(hint)
    if isinstance(origin, type):
        yield origin


def _signatures(obj: object) -> Iterator[tuple[str, object]]:
    """(where, callable) for a public function, or every public method and property of a
    public class."""
    if inspect.isclass(obj):
        for name, member in vars(obj).items():
            if name.startswith("_") and name != "__init__":
                continue
            if isinstance(member, property) and member.fget is not None:
                yield f"{obj.__name__}.{name}", member.fget
            elif isinstance(member, (staticmethod, classmethod)):
                yield f"{obj.__name__}.{name}", member.__func__
            elif inspect.isfunction(member):
                yield f"{obj.__name__}.{name}", member
    elif inspect.isfunction(obj):
        yield obj.__name__, obj


def test_every_class_in_a_public_signature_is_exported() -> None:
    exported = {getattr(imgtools, name) for name in imgtools.__all__}
    exported_classes = {value for value in exported if isinstance(value, type)}
    # Plumbing is public too, from its own module.
    exported_classes |= {getattr(imgtools.transport, n) for n in imgtools.transport.__all__}
    # Names some modules import under TYPE_CHECKING only: resolve them from the package.
    import pandas as pd

    names = {"pd": pd, **{n: getattr(imgtools, n) for n in imgtools.__all__},
             **{n: getattr(imgtools.transport, n) for n in imgtools.transport.__all__}}
    missing: dict[str, set[str]] = {}
    for value in exported:
        for where, func in _signatures(value):
            hints = typing.get_type_hints(func, localns=names)
            for hint in hints.values():
                for cls in _classes(hint):
                    module = cls.__module__.split(".")[0]
                    if module in _FOREIGN or cls.__name__.startswith("_"):
                        continue
                    if cls not in exported_classes:
                        missing.setdefault(f"{cls.__module__}.{cls.__qualname__}",
                                           set()).add(where)
    assert not missing, missing


def test_lazy_names_are_what_type_checkers_are_told() -> None:
    for name, module in imgtools._LAZY.items():
        assert getattr(imgtools, name) is getattr(importlib.import_module(module), name)
    source = inspect.getsource(imgtools)
    checked = source[source.index("if _typing.TYPE_CHECKING:"):source.index("__version__")]
    for name in imgtools._LAZY:
        assert f"        {name},\n" in checked, name


def test_transfer_options_are_explicit_and_typed_with_exported_names() -> None:
    import builtins
    import collections.abc
    import inspect
    import re

    known = (set(imgtools.__all__) | set(dir(builtins)) | set(dir(typing))
             | set(dir(collections.abc)))
    for cls in (imgtools.Client, imgtools.AsyncClient):
        for name in ("transfer", "resume_transfer", "transfer_all"):
            params = list(inspect.signature(getattr(cls, name)).parameters.values())
            assert [p.kind for p in params[2:]] == [inspect.Parameter.KEYWORD_ONLY] * (
                len(params) - 2), f"{cls.__name__}.{name}: no **options, no positional"
            for p in params[1:]:
                assert p.annotation is not inspect.Parameter.empty, (name, p.name)
                assert "Any" not in str(p.annotation), (name, p.name)
                names = set(re.findall(r"[A-Za-z_]\w*", str(p.annotation)))
                assert names <= known, (f"{cls.__name__}.{name}", p.name, names - known)
