"""Processors: the built-ins, and loading ``module:function`` or ``file.py:function``.

A processor is named by a string so that the same run can be resumed, or a shard run,
in another process. Sync functions run in worker threads; async ones on the loop.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import ConfigError, ProcessorLoadError

Fn = Callable[[Any], Any]


async def text_stats(item: Any) -> dict[str, Any]:
    """The older tool's ``process_item``: a few statistics of one line of text."""
    if not isinstance(item, str):
        raise TypeError(f"text_stats needs a line of text, got {type(item).__name__}")
    return {
        "original": item,
        "length": len(item),
        "word_count": len(item.split()),
        "uppercase": item.upper(),
    }


async def identity(item: Any) -> Any:
    """Return the item unchanged: measures the engine's own cost per item."""
    return item


def _make_sleep(latency: str = "0.01") -> Fn:
    """Simulated I/O: wait ``latency`` seconds, then return the item."""
    seconds = _float_arg("latency", latency)

    async def sleep(item: Any) -> Any:
        # asyncio's own sleep: the engine runs on asyncio (or uvloop), and anyio's
        # backend dispatch would add about 2 µs to every item of a benchmark.
        await asyncio.sleep(seconds)
        return item

    return sleep


def _float_arg(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"processor argument {name} must be a number, got {value!r}") from None
    if number < 0:
        raise ConfigError(f"processor argument {name} must not be negative, got {value}")
    return number


def _make_http(headers: dict[str, str] | None = None) -> Fn:
    from .http import make_http

    return make_http(headers)


BUILTINS: dict[str, Callable[..., Fn]] = {
    "text_stats": lambda: text_stats,
    "identity": lambda: identity,
    "sleep": _make_sleep,
    "http": _make_http,
}
TAKES_HEADERS = ("http",)


@dataclass(frozen=True, slots=True)
class Processor:
    """A loaded processor: how to call it, and the spec it was loaded from."""

    spec: str
    fn: Fn
    is_async: bool


def load_processor(
    spec: str | Fn, args: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> Processor:
    """Resolve a spec or a callable into a Processor, checking it takes one item.

    ``headers`` (``--header``) go to the ``http`` built-in; they are not processor
    arguments because they must never be written into the run's manifest.
    """
    args = args or {}
    if headers:
        if spec not in TAKES_HEADERS:
            raise ConfigError("--header applies to the http processor only")
        return Processor("http", _builtin("http", {**args, "headers": headers}), True)
    if callable(spec):
        fn, name = spec, getattr(spec, "__qualname__", repr(spec))
        _no_args(args, name)
    elif spec in BUILTINS:
        fn, name = _builtin(spec, args), spec
    else:
        _no_args(args, spec)
        fn, name = _import(spec)
    _check_signature(fn, name)
    return Processor(name, fn, _is_async(fn))


def _builtin(name: str, args: dict[str, Any]) -> Fn:
    try:
        return BUILTINS[name](**args)
    except TypeError:
        raise ConfigError(
            f"built-in processor {name} does not take {', '.join(sorted(args))}; "
            "see the README's list of built-in processors"
        ) from None


def _no_args(args: dict[str, str], name: str) -> None:
    if args:
        raise ConfigError(f"processor arguments apply to built-in processors only, not {name}")


def _import(spec: str) -> tuple[Fn, str]:
    """The function a spec names, and the spec as the run records it."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ProcessorLoadError(
            f"unknown processor {spec!r}: use a built-in ({', '.join(BUILTINS)}), "
            "module:function or path/to/file.py:function"
        )
    local = None if target.endswith(".py") else _in_working_dir(target)
    if local is not None:  # mymod:fn and ./mymod.py: as uvicorn and celery find it
        target, spec = str(local), f"{local}:{attr}"
    module = _load_file(target) if target.endswith(".py") else _load_module(target)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ProcessorLoadError(f"processor {spec}: {target} has no function {attr!r}")
    return fn, _canonical(spec)


def _in_working_dir(name: str) -> Path | None:
    """``name.py`` in the working directory, when ``name`` is not importable otherwise.

    An installed module of the same name wins, so a stray file cannot shadow a library;
    the run records the file's absolute path, so a resume elsewhere loads the same file.
    """
    candidate = Path.cwd() / f"{name}.py"
    if "." in name or not name.isidentifier() or not candidate.is_file():
        return None
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    origin = found.origin if found is not None else None
    if found is not None and (origin is None or Path(origin).resolve() != candidate.resolve()):
        return None  # importable from elsewhere: the installed module wins
    return candidate.resolve()


def _canonical(spec: str) -> str:
    """A file spec with its path made absolute, as it is recorded in the run.

    A resume from another directory then loads the same file, and the same file named
    by another relative path is the same processor.
    """
    target, _, attr = spec.rpartition(":")
    if not target.endswith(".py"):
        return spec
    return f"{Path(target).resolve()}:{attr}"


def _load_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise ProcessorLoadError(
            f"cannot import processor module {name!r}: {type(exc).__name__}: {exc}"
        ) from exc


def _load_file(target: str) -> Any:
    path = Path(target)
    if not path.is_file():
        raise ProcessorLoadError(f"processor file {target} does not exist")
    name = f"asyncproc_user_{path.stem}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ProcessorLoadError(f"processor file {target} cannot be loaded as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ProcessorLoadError(
            f"processor file {target} failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    return module


def _check_signature(fn: Fn, name: str) -> None:
    try:
        inspect.signature(fn).bind(None)
    except TypeError:
        raise ProcessorLoadError(
            f"processor {name} must accept exactly one positional argument (the item)"
        ) from None
    except ValueError:
        return  # builtins without a signature: trust them


def _is_async(fn: Fn) -> bool:
    call = getattr(fn, "__call__", None)  # noqa: B004 - async callable objects count too
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)
