"""Run options, validated once, before any work starts."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import PurePath
from typing import Any

from ._errors import ConfigError, named, option, speaking_cli
from ._public import public

DEFAULT_CHECKPOINT = ".asyncproc"  # under the current directory, or beside the output for `run`
DEFAULT_CONCURRENCY = 64
DEFAULT_BATCH_SIZE = 1000
DEFAULT_RETRIES = 2
DEFAULT_COMMIT_INTERVAL = 5.0
DEFAULT_GRACE = 10.0
DEFAULT_MAX_CONCURRENCY = 256  # lanes of --concurrency auto without --max-concurrency
DEFAULT_EARLY_STOP = 100
DEFAULT_STALL_WARNING = 30.0
RATE_MIN_SAMPLE = 100  # items done before a failure rate can stop a run
MAX_AUTO_WORKERS = 8
BYTES_PER_AUTO_WORKER = 16 * 1024 * 1024

# Options whose change would change the bytes of the output; a resume refuses them.
RESULT_OPTIONS = ("processor", "processor_args", "format", "output_kind")


@public
class InputFormat(StrEnum):
    """How a line becomes an item."""

    TEXT = "text"  # the stripped line, decoded as UTF-8
    JSONL = "jsonl"  # the line parsed as one JSON value


@public
class OutputKind(StrEnum):
    """How committed records are laid out in the final output."""

    JSON = "json"  # one JSON array, result fields then index
    JSONL = "jsonl"  # JSON lines, index then result fields


def format_for(path: PurePath) -> InputFormat:
    return InputFormat.JSONL if path.suffix.lower() in {".jsonl", ".ndjson"} else InputFormat.TEXT


def output_kind_for(path: PurePath) -> OutputKind:
    return OutputKind.JSONL if path.suffix.lower() in {".jsonl", ".ndjson"} else OutputKind.JSON


def auto_workers(size: int) -> int:
    """One shard per 16 MiB, at most eight: small inputs stay in one ordered stream."""
    return max(1, min(MAX_AUTO_WORKERS, math.ceil(size / BYTES_PER_AUTO_WORKER)))


RATE_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
              "h": 3600.0, "hour": 3600.0}  # fmt: skip


def parse_rate(flag: str, value: str | float) -> float:
    """``200/s``, ``3000/min``, ``90000/m`` or ``5/h`` (a bare number is per second), per second."""
    text = str(value).strip()
    number, _, unit = text.partition("/")
    try:
        amount = float(number)
        per = RATE_UNITS[unit.strip().lower() or "s"]
    except (ValueError, KeyError):
        raise ConfigError(f"{flag} takes a rate like 200/s or 3000/min, got {value!r}") from None
    if not (amount > 0 and math.isfinite(amount)):
        raise ConfigError(f"{flag} must be more than 0, got {value!r}")
    return amount / per


@dataclass(frozen=True, slots=True)
class FailureLimit:
    """How many failed items a run tolerates before it stops itself."""

    count: int | None
    rate: float | None

    @classmethod
    def parse(cls, value: int | str) -> FailureLimit:
        text = str(value).strip()
        try:
            if text.endswith("%"):
                rate = float(text[:-1]) / 100
                if not 0 <= rate < 1:
                    raise ValueError
                return cls(None, rate)
            count = int(text)
            if count < 0:
                raise ValueError
            return cls(count, None)
        except ValueError:
            raise ConfigError(
                f"{named('max_failures')} takes a count like 10 or a rate like 5%, got {value!r}"
            ) from None

    def exceeded(self, failed: int, done: int) -> bool:
        if self.count is not None:
            return failed > self.count
        assert self.rate is not None
        return done >= RATE_MIN_SAMPLE and failed > self.rate * done

    def __str__(self) -> str:
        return f"{self.count}" if self.count is not None else f"{(self.rate or 0) * 100:g}%"


@public
@dataclass(frozen=True, slots=True)
class Options:
    """Everything that shapes a run besides its input and output paths."""

    processor: str = "text_stats"
    processor_args: dict[str, str] = field(default_factory=dict)
    format: InputFormat | None = None
    output_kind: OutputKind | None = None
    workers: int | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    batch_size: int = DEFAULT_BATCH_SIZE
    retries: int = DEFAULT_RETRIES
    timeout: float | None = None
    commit_interval: float = DEFAULT_COMMIT_INTERVAL
    max_failures: int | str | None = None
    grace: float = DEFAULT_GRACE
    simulate_crash: int | None = None
    durable: bool = True  # False: no fsyncs, no checkpoint files; a crash redoes the run
    processes: int = 1  # worker processes on this machine, each with its own loop
    threads: int | None = None  # threads for a sync processor; default: the concurrency
    # Budgets and adaptive concurrency (limits/gate.py); none of them changes results.
    rate: str | None = None  # requests per second or minute over the whole run: "200/s"
    cost_rate: str | None = None  # cost units (tokens...) per second or minute: "90000/min"
    cost: str | None = None  # how an item's cost is counted: "field:NAME" or "llm"
    adaptive: bool = False  # --concurrency auto: `concurrency` lanes, an adaptive limit on them
    max_concurrency: int | None = None  # the ceiling of --concurrency auto, as given
    early_stop: int = DEFAULT_EARLY_STOP  # stop if the first N items all fail; 0: never
    stall_warning: float = DEFAULT_STALL_WARNING  # warn when one item holds a unit; 0: never

    def __post_init__(self) -> None:
        _at_least("batch_size", self.batch_size, 1)
        _at_least("concurrency", self.concurrency, 1)
        _at_least("retries", self.retries, 0)
        _at_least("processes", self.processes, 1)
        _at_least("early_stop", self.early_stop, 0)
        if not self.stall_warning >= 0:
            raise ConfigError(f"{named('stall_warning')} must be zero or more seconds")
        for name, value in (("workers", self.workers), ("threads", self.threads)):
            if value is not None:
                _at_least(name, value, 1)
        if self.simulate_crash is not None:
            _at_least("simulate_crash", self.simulate_crash, 1)
        _positive("timeout", self.timeout)
        _positive("commit_interval", self.commit_interval)
        if not self.durable and self.simulate_crash is not None:
            raise ConfigError(
                f"{named('simulate_crash')} needs checkpoints to resume from; "
                f"drop {option('durable', False)}"
            )
        if not self.grace >= 0:
            raise ConfigError(f"{named('grace')} must be zero or more seconds, got {self.grace}")
        self.failure_limit()
        self._check_limits()

    def _check_limits(self) -> None:
        for name, rate in (("rate", self.rate), ("cost_rate", self.cost_rate)):
            if rate is not None:
                parse_rate(named(name), rate)
        if (self.cost is None) != (self.cost_rate is None):
            raise ConfigError(
                f"{named('cost')} and {named('cost_rate')} go together: what an item costs, "
                f"and how many cost units the run may spend, e.g. {option('cost', 'llm')} "
                f"{option('cost_rate', '90000/min')}"
            )
        if self.max_concurrency is not None:
            _at_least("max_concurrency", self.max_concurrency, 1)
            if not self.adaptive:
                raise ConfigError(
                    f"{named('max_concurrency')} needs {option('concurrency', 'auto')}"
                )

    def failure_limit(self) -> FailureLimit | None:
        """``--max-failures`` as a count (``10``) or a rate of items done (``5%``)."""
        return None if self.max_failures is None else FailureLimit.parse(self.max_failures)

    def resolved(self, input_path: PurePath, output_path: PurePath) -> Options:
        """Fill in the choices that depend on the paths."""
        return replace(
            self,
            format=self.format or format_for(input_path),
            output_kind=self.output_kind or output_kind_for(output_path),
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("simulate_crash")
        return data

    def result_differences(self, stored: dict[str, Any]) -> list[str]:
        """Name each result-changing option that differs from a stored run's."""
        mine = self.to_dict()
        return [
            f"{key}: run has {stored.get(key)!r}, now {mine[key]!r}"
            for key in RESULT_OPTIONS
            if _plain(stored.get(key)) != _plain(mine[key])
        ]

    def to_add(self, stored: dict[str, Any]) -> str:
        """What to change to get a stored run's result-changing options, as the caller
        spells them: ``add --processor p.py:work``; the output kind follows the output."""
        mine = self.to_dict()
        wanted = [key for key in RESULT_OPTIONS if _plain(stored.get(key)) != _plain(mine[key])]
        steps: list[str] = []
        for key in wanted:
            value = stored.get(key)
            if key == "processor_args" and isinstance(value, dict) and speaking_cli():
                pairs = [option(key, f"{k}={v}") for k, v in value.items()]
                steps.append(f"add {' '.join(pairs)}" if pairs else f"leave out {named(key)}")
            elif key == "output_kind":
                steps.append(f"name the output *.{value}")
            else:
                steps.append(f"add {option(key, _plain(value))}")
        return ", ".join(steps)


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, StrEnum) else value


def _at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{named(name)} must be at least {low}, got {value}")


def _positive(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ConfigError(f"{named(name)} must be a positive number of seconds, got {value}")


# Every default of a run, in one place: the CLI's flags show these (``cli/run.py``) and
# the README's option table is checked against them (``tests/test_defaults.py``).
DEFAULTS = Options()
