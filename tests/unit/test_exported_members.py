"""``imgtools.__all__`` states the public surface (as httpx's test of the same name does): it
names exactly the public members of the package, the lazy ones included, and every class or
``Literal`` alias of imgtools that a public signature or field names is among them, so a user
never meets a type they cannot import.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
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


def _own(cls: type) -> Iterator[type]:
    """``cls`` and the classes of imgtools it inherits from (their members are its own)."""
    for base in reversed(cls.__mro__):
        if base.__module__.split(".")[0] == "imgtools":
            yield base


def _annotations(obj: object) -> Iterator[tuple[str, object, dict[str, object]]]:
    """(where, its namespace, its annotations as written) for a public function, or for a
    public class: its public fields and every public method's and property's parameters
    and return, those it inherits from imgtools' (often private) base classes included."""
    if inspect.isclass(obj):
        members: dict[str, object] = {}
        for base in _own(obj):
            fields = {name: hint for name, hint in inspect.get_annotations(base).items()
                      if not name.startswith("_")}
            if fields:
                yield f"{obj.__name__} (fields)", vars(sys.modules[base.__module__]), fields
            members.update(vars(base))
        for name, member in members.items():
            if name.startswith("_") and name != "__init__":
                continue
            func = (member.fget if isinstance(member, property)
                    else member.__func__ if isinstance(member, (staticmethod, classmethod))
                    else member)
            if inspect.isfunction(func):
                yield f"{obj.__name__}.{name}", func.__globals__, inspect.get_annotations(func)
    elif inspect.isfunction(obj):
        yield obj.__name__, obj.__globals__, inspect.get_annotations(obj)


def _named(node: ast.expr) -> Iterator[ast.expr]:
    """The names (``Task``, ``sql.TaskRow``) an annotation's syntax tree uses, forward
    references included; not a ``Literal``'s values."""
    if isinstance(node, (ast.Name, ast.Attribute)):
        yield node
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield from _named(ast.parse(node.value, mode="eval").body)
    elif isinstance(node, ast.Subscript):
        yield from _named(node.value)
        if not ast.unparse(node.value).endswith("Literal"):
            yield from _named(node.slice)
    else:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                yield from _named(child)


def _leaks(hint: object, exported: set[int]) -> Iterator[str]:
    """What of ``hint`` (an object a signature names) a user could not import from
    imgtools: a class of imgtools, or a ``Literal`` alias (a named type too), not exported.
    An exported name counts as a whole (``Timeout``); another alias counts as what it
    stands for (``Filter`` is ``str | Iterable[str] | None``)."""
    if id(hint) in exported or isinstance(hint, (types.ModuleType, typing.TypeVar)):
        return
    if typing.get_origin(hint) is typing.Literal:
        yield repr(hint)
        return
    for cls in _classes(hint):
        if cls.__module__.split(".")[0] == "imgtools" and id(cls) not in exported:
            yield f"{cls.__module__}.{cls.__qualname__}"


#: Constructors users never call, so their private parameter types leak nothing: the transfer
#: handles are made by ``Client.transfer``/``resume_transfer``/``transfer_all`` from the job
#: the client built.
_MADE_BY_THE_LIBRARY = frozenset({"Transfer.__init__", "AsyncTransfer.__init__"})


def test_every_type_a_public_signature_names_is_exported() -> None:
    public = {name: getattr(imgtools, name) for name in imgtools.__all__}
    # Plumbing is public too, from its own module.
    plumbing = {name: getattr(imgtools.transport, name) for name in imgtools.transport.__all__}
    exported = {id(value) for value in (*public.values(), *plumbing.values())}
    # Names some modules import under TYPE_CHECKING only: resolve them from the package.
    import pandas as pd

    fallback = {"pd": pd, **public, **plumbing}
    missing: dict[str, set[str]] = {}
    for value in public.values():
        for where, namespace, hints in _annotations(value):
            scope = {**fallback, **namespace}
            for hint in hints.values():
                if not isinstance(hint, str):  # a module without postponed annotations
                    named = [hint]
                else:
                    named = [eval(ast.unparse(node), scope)  # a (dotted) name, nothing else
                             for node in _named(ast.parse(hint, mode="eval").body)]
                for obj in named:
                    for leak in _leaks(obj, exported):
                        missing.setdefault(leak, set()).add(where)
    exempt = {where for places in missing.values() for where in places} & _MADE_BY_THE_LIBRARY
    assert exempt == _MADE_BY_THE_LIBRARY  # each exemption is still needed
    missing = {leak: left for leak, places in missing.items()
               if (left := places - _MADE_BY_THE_LIBRARY)}
    assert not missing, missing


def test_the_signature_check_sees_fields_aliases_and_inherited_methods() -> None:
    # What the test above relies on, shown on cases whose answer is known.
    from imgtools import _leftovers

    kind = typing.Literal["export", "orphan segments"]
    assert list(_leaks(kind, set())) == [repr(kind)]
    assert not list(_leaks(kind, {id(kind)}))
    assert list(_leaks(_leftovers.Leftover | None, set())) == ["imgtools._leftovers.Leftover"]
    assert not list(_leaks(dict[str, typing.Any], set()))
    tree = ast.parse("Callable[[list[sql.TaskRow]], Literal['a b']] | 'Task'", mode="eval")
    assert [ast.unparse(n) for n in _named(tree.body)] == [
        "Callable", "list", "sql.TaskRow", "Literal", "Task"]
    where = {w for w, _, _ in _annotations(imgtools.Client)}
    assert {"Client.tasks", "Client.__init__", "Client.in_region"} <= where  # in_region: inherited
    assert "Leftover (fields)" in {w for w, _, _ in _annotations(imgtools.Leftover)}


def test_a_leftovers_kind_is_a_public_literal() -> None:
    assert typing.get_type_hints(imgtools.Leftover)["kind"] == imgtools.LeftoverKind
    assert typing.get_args(imgtools.LeftoverKind) == ("export", "orphan segments")


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
