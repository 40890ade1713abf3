"""Budgets, pool-wide backoff and adaptive concurrency: one :class:`Gate` per process.

Lanes call through the gate only when something needs it (a rate, ``--concurrency
auto``, or the first :class:`~asyncproc.RetryAfter` a processor raised): with no limits
the hot path is the plain call, unchanged. Through the gate, a call

1. waits out a pool-wide pause (a ``Retry-After`` while most calls are rejected):
   nobody starts a call until then;
2. waits for a concurrency slot: ``limit`` calls at once, and after a pause a *ramp*
   that starts at one call (a probe) and grows by one per success (slow start), so a
   service that is still down costs one rejection per pause, not one per lane;
3. takes its slot in the pacers (:class:`Pacer`): requests per second and cost units
   per second are spent evenly, one slot after another, never a second's worth at once.

The adaptive limit (:class:`Adaptive`) is AIMD with a latency guard: +1 per success
while it grows from its start (slow start, doubling per round trip), then +1/limit per
success (one per round trip); on a rejection, or when the recent latency (an average
over about 20 calls) exceeds twice the usual one (over about 200 calls: a queue is
building up), times 0.5 the first time (slow start overshoots by up to twice) and times
0.9 after that, at most once per round trip. A lasting shift the run did not cause (a
slower service, a client loop short of CPU) reaches the usual latency within a few
hundred calls and stops the cutting (the idea of Netflix's gradient limiter). It never
grows while the run does not use it (fewer calls in flight than the limit).

A rejection pauses the pool only when rejections are *widespread*: most of the calls
that ended over the last round trip or so (a time-decayed count, :class:`Recent`) were
rejected, as in an outage or with an empty token bucket, or nothing has succeeded yet. An
isolated one (a concurrency overrun, answered with ``Retry-After: 1`` by many APIs,
while the other calls succeed) only cuts the adaptive limit, and its item alone waits
out the ``Retry-After``: pausing every lane for a second there is what collapsed
``--concurrency auto`` to a tenth of the service's rate.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import anyio

from .._errors import ConfigError, ItemError, RetryAfter, named
from .._options import Options, parse_rate

UNLIMITED = 1 << 30
START_LIMIT = 4  # where --concurrency auto starts (it doubles per round trip from there)
DECREASE = 0.9  # multiplicative decrease on a rejection or a latency rise
SLOW_START_DECREASE = 0.5  # the first decrease: slow start doubled past the limit at most
LATENCY_TOLERANCE = 2.0  # smoothed latency over the best recent one that means queueing
LATENCY_ALPHA = 0.05  # weight of a new sample in the smoothed latency, when it is higher
WARMUP = 10  # successes before latency may cut (the first calls open connections)
LATENCY_FALL_ALPHA = 0.5  # and when it is lower (a cold start's first calls are slow)
BASELINE_ALPHA = 0.005  # weight of a higher sample in the reference latency
MAX_REJECTIONS = 100  # an item rejected this often in a row fails (the service is broken)
EARLY = 0.0005  # a pacing slot this close is taken at once (the loop's timers are coarser)
WIDESPREAD = 0.75  # share of recently ended calls rejected that pauses the pool
MIN_WINDOW = 0.005  # s: the shortest memory of "recent" (a round trip, at least this)

Cost = Callable[[Any], float]
PYTHON_COST = "python"  # what the manifest records for a cost function given from Python


@dataclass(frozen=True, slots=True)
class LimitConfig:
    """The limits of a run (or of one process's share of it); all optional."""

    rate: float | None = None  # requests per second
    cost_rate: float | None = None  # cost units per second
    cost: str | None = None  # cost spec: "field:NAME" or "llm"
    adaptive: bool = False
    maximum: int = UNLIMITED  # lanes: the fixed limit, or the ceiling of the adaptive one

    @classmethod
    def from_options(cls, options: Options) -> LimitConfig:
        config = cls(
            rate=None if options.rate is None else parse_rate(named("rate"), options.rate),
            cost_rate=(None if options.cost_rate is None
                       else parse_rate(named("cost_rate"), options.cost_rate)),
            cost=options.cost, adaptive=options.adaptive, maximum=options.concurrency,
        )  # fmt: skip
        if config.cost != PYTHON_COST:
            cost_function(config.cost)  # a bad spec fails now, before any work
        return config

    @property
    def configured(self) -> bool:
        """Whether calls go through the gate from the start."""
        return self.adaptive or self.rate is not None or self.cost_rate is not None

    def share(self, parts: int, lanes: int) -> LimitConfig:
        """One process's share of the run's budgets: 1/``parts`` of each rate.

        Each process paces its share evenly, so the sum of the processes' calls is
        paced too: no per-call messages between processes, at most one call per
        process arriving together.
        """

        def part(rate: float | None) -> float | None:
            return None if rate is None else rate / parts

        return replace(self, rate=part(self.rate), cost_rate=part(self.cost_rate), maximum=lanes)

    def to_dict(self) -> dict[str, Any]:
        return {"rate": self.rate, "cost_rate": self.cost_rate, "cost": self.cost,
                "adaptive": self.adaptive, "maximum": self.maximum}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LimitConfig:
        return cls(**data)


class Pacer:
    """Spends ``per_second`` units evenly: each call gets the next free slot in time.

    A virtual clock (GCRA with no burst): a call costing ``c`` starts at the later of
    now and the previous call's slot, and moves the next slot on by ``c / per_second``.
    An idle pacer does not save up: after a lull the next call starts at once, and the
    one after it one interval later.
    """

    __slots__ = ("_next", "per_second")

    def __init__(self, per_second: float) -> None:
        self.per_second = per_second
        self._next = -math.inf

    def reserve(self, cost: float, now: float) -> float:
        """The time at which a call costing ``cost`` may start."""
        start = max(now, self._next)
        self._next = start + cost / self.per_second
        return start


class Adaptive:
    """AIMD over calls in flight, with a latency guard (see the module docstring)."""

    def __init__(self, maximum: int, start: int = START_LIMIT) -> None:
        self.maximum = maximum
        self.limit = float(min(start, maximum))
        self.growing = True  # slow start: +1 per success until the first cut
        self.smoothed: float | None = None  # recent latency (rises over ~20 calls)
        self.baseline = math.inf  # usual latency (rises over ~200 calls): the reference
        self.samples = 0
        self._last_cut = -math.inf

    def success(self, latency: float, in_flight: int, now: float) -> None:
        """A call took ``latency`` s while ``in_flight`` calls (itself included) ran."""
        smoothed = self._observe(latency)
        self.samples += 1
        if self.samples > WARMUP and smoothed > LATENCY_TOLERANCE * self.baseline:
            self.cut(now)
        elif in_flight >= int(self.limit):  # only a limit in use may grow
            step = 1.0 if self.growing else 1.0 / self.limit
            self.limit = min(float(self.maximum), self.limit + step)

    def cut(self, now: float) -> None:
        """Rejected, or queueing: times 0.9 (0.5 ending slow start, which overshoots by up to
        twice), at most once per round trip."""
        if now - self._last_cut < (self.smoothed or 0.0):
            return
        factor = SLOW_START_DECREASE if self.growing else DECREASE
        self._last_cut, self.growing = now, False
        self.limit = max(1.0, self.limit * factor)

    def _observe(self, latency: float) -> float:
        """Both averages fall fast (no queue makes calls faster; a cold start's first calls
        are slow) and rise at their own pace: a queue we build shows in the recent one
        first, while a lasting shift we did not cause (a slower service, a busy client
        loop) reaches the reference too, and stops cutting."""
        if self.smoothed is None:
            self.smoothed = self.baseline = latency
            return latency
        self.smoothed = _toward(self.smoothed, latency, LATENCY_ALPHA)
        self.baseline = _toward(self.baseline, latency, BASELINE_ALPHA)
        return self.smoothed


class Recent:
    """Calls that ended lately, succeeded or rejected: counts that fade by ``e`` per round
    trip (the usual latency of a success), so "recent" means the last round trip or so,
    whatever the service's speed, at O(1) per call."""

    __slots__ = ("_at", "latency", "ok", "rejected")

    def __init__(self) -> None:
        self.ok = self.rejected = 0.0
        self.latency: float | None = None
        self._at = -math.inf

    def success(self, latency: float, now: float) -> None:
        self._fade(now)
        self.ok += 1.0
        self.latency = latency if self.latency is None else _toward(self.latency, latency,
                                                                    LATENCY_ALPHA)  # fmt: skip

    def rejection(self, now: float) -> None:
        self._fade(now)
        self.rejected += 1.0

    def widespread(self) -> bool:
        """Whether most recent calls were rejected (always, before any success)."""
        return self.rejected >= WIDESPREAD * (self.ok + self.rejected)

    def _fade(self, now: float) -> None:
        window = max(MIN_WINDOW, self.latency or 0.0)
        keep = math.exp(-(now - self._at) / window) if now > self._at else 1.0
        self.ok, self.rejected, self._at = self.ok * keep, self.rejected * keep, now


def _toward(average: float, sample: float, rise: float) -> float:
    alpha = rise if sample > average else LATENCY_FALL_ALPHA
    return average + alpha * (sample - average)


def cost_function(spec: str | Cost | None) -> Cost | None:
    """An item's cost: a callable as given, ``field:NAME`` (a number in the JSON item,
    dotted for nested objects) or ``llm`` (an estimate of an LLM request's tokens)."""
    if spec is None or callable(spec):
        return spec
    if spec == PYTHON_COST:
        raise ConfigError("this run's cost was a Python function: pass cost= again")
    if spec == "llm":
        return llm_tokens
    kind, sep, name = spec.partition(":")
    if kind == "field" and sep and name:
        return _field_cost(name.split("."))
    raise ConfigError(f"{named('cost')} takes field:NAME or llm, got {spec!r}")


def _field_cost(path: list[str]) -> Cost:
    def cost(item: Any) -> float:
        value = item
        for key in path:
            if not isinstance(value, dict) or key not in value:
                raise ValueError(f"{named('cost')} field {'.'.join(path)} is missing from the item")
            value = value[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(
                f"{named('cost')} field {'.'.join(path)} is not a number >= 0: {value!r}"
            )
        return float(value)

    return cost


def llm_tokens(item: Any) -> float:
    """Tokens an LLM request may consume: its prompt text / 4, plus the most it may answer.

    Works on a chat or completion body, bare or as the ``json`` of an ``http`` item:
    the characters of the text under ``messages`` (each message's ``content``, or its
    parts' ``text``; or ``prompt`` / ``input``),
    divided by 4 (about a token each for English), plus ``max_tokens`` (or
    ``max_completion_tokens``) times ``n``. The cookbook script's estimate, and an
    upper bound the service will not exceed.
    """
    body = item.get("json", item) if isinstance(item, dict) else item
    if not isinstance(body, dict):
        return math.ceil(_chars(body) / 4)
    prompt = body.get("messages", body.get("prompt", body.get("input", "")))
    answer = body.get("max_tokens", body.get("max_completion_tokens", 0)) or 0
    return math.ceil(_chars(prompt) / 4) + float(answer) * float(body.get("n", 1) or 1)


def _chars(value: Any) -> int:
    """Characters of the text in a prompt: strings, a message's content, a part's text."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return _chars(value.get("content", value.get("text")))
    if isinstance(value, list):
        return sum(_chars(v) for v in value)
    return 0


class Gate:
    """The run's calls pass here when limits apply: pauses, a concurrency limit, pacing."""

    def __init__(self, config: LimitConfig, cost: Cost | None = None) -> None:
        self.config = config
        self.adaptive = Adaptive(config.maximum) if config.adaptive else None
        self.requests = None if config.rate is None else Pacer(config.rate)
        self.units = None if config.cost_rate is None else Pacer(config.cost_rate)
        self.cost = cost if cost is not None else cost_function(config.cost)
        self.in_flight = 0
        self.ramp = math.inf  # calls allowed at once while ramping up after a pause
        self.paused_until = -math.inf
        self.rejections = self.pauses = 0
        self.recent = Recent()
        self.on_pause: Callable[[float], None] | None = None  # tell the other processes
        self.activate: Callable[[], None] = _nothing  # the pipeline's: use the gate from now on
        self.remote: dict[int, tuple[int, int]] = {}  # other processes: limit, rejections
        self._turns: deque[anyio.Event] = deque()

    # -- what the run shows ---------------------------------------------------------

    @property
    def limit(self) -> int:
        """Calls allowed at once now (over every process of the run)."""
        if self.remote:
            return sum(limit for limit, _ in self.remote.values())
        return int(self.adaptive.limit) if self.adaptive else self.config.maximum

    @property
    def rejected(self) -> int:
        return self.rejections + sum(rejected for _, rejected in self.remote.values())

    def report(self, process: int, limit: int, rejections: int) -> None:
        """Another process's limit and rejections (the parent of ``--processes``)."""
        self.remote[process] = (limit, rejections)

    # -- calls ----------------------------------------------------------------------

    def _allowed(self) -> int:
        if self.ramp == math.inf:
            return self.limit
        return max(1, min(self.limit, int(self.ramp)))

    async def enter(self, item: Any) -> None:
        """Wait until a call on ``item`` may start: not paused, a slot free, its pace."""
        cost = 1.0 if self.cost is None else self.cost(item)
        while True:
            now = anyio.current_time()
            if now < self.paused_until:
                await anyio.sleep(self.paused_until - now)
            elif self.in_flight >= self._allowed():
                await self._wait_turn()
            else:
                self.in_flight += 1
                try:
                    await self._pace(cost, now)
                except BaseException:
                    self._release()
                    raise
                if anyio.current_time() >= self.paused_until:
                    return
                self._release()  # a pause began while it waited: wait for its end

    async def _pace(self, cost: float, now: float) -> None:
        start = now
        if self.requests is not None:
            start = self.requests.reserve(1.0, now)
        if self.units is not None:
            start = max(start, self.units.reserve(cost, now))
        if start - now > EARLY:
            await anyio.sleep(start - now)

    async def _wait_turn(self) -> None:
        turn = anyio.Event()
        self._turns.append(turn)
        try:
            await turn.wait()
        except BaseException:
            if turn.is_set():
                self._wake()  # pass the turn on
            else:
                self._turns.remove(turn)
            raise

    def _release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        free = self._allowed() - self.in_flight
        while free > 0 and self._turns:
            self._turns.popleft().set()
            free -= 1

    def done(self, started: float, ok: bool) -> None:
        """A call that entered has ended; ``ok``: it succeeded (a latency sample)."""
        try:
            if ok:
                self._succeeded(anyio.current_time() - started)
        finally:
            self._release()  # whatever happens, the slot is given back

    def _succeeded(self, latency: float) -> None:
        now = anyio.current_time()
        self.recent.success(latency, now)
        if self.adaptive is not None:
            self.adaptive.success(latency, self.in_flight, now)
        if self.ramp != math.inf:
            self.ramp += 1
            if self.ramp >= self.limit:
                self.ramp = math.inf

    def rejected_call(self, error: RetryAfter) -> bool:
        """A call that entered was rejected: note it, then free its slot. Whether the pool
        paused (else its item alone waits, :meth:`back_off`)."""
        try:
            return self.note_rejection(error)
        finally:
            self._release()

    def note_rejection(self, error: RetryAfter) -> bool:
        """The service said slow down: cut the adaptive limit, from now on route every call
        through the gate, and, if most recent calls were rejected, pause the pool for
        ``seconds``. Whether it paused."""
        self.rejections += 1
        self.activate()
        now = anyio.current_time()
        self.recent.rejection(now)
        if self.adaptive is not None:
            self.adaptive.cut(now)
        if error.seconds and self.recent.widespread():
            self.pause(error.seconds)
            return True
        return False

    async def rejected_outside(self, error: RetryAfter) -> None:
        """A call made outside the gate was rejected: note it, and back off."""
        if not self.note_rejection(error):
            await back_off(error, 1)

    def pause(self, seconds: float, *, forward: bool = True) -> None:
        """Start no call for ``seconds``, then ramp up from one call at a time."""
        until = anyio.current_time() + seconds
        if until <= self.paused_until:
            return
        self.paused_until, self.ramp = until, 1.0
        self.pauses += 1
        if forward and self.on_pause is not None:
            self.on_pause(seconds)

    def paused_elsewhere(self, seconds: float) -> None:
        """Another process of the run was told to slow down: this one pauses too."""
        self.pause(seconds, forward=False)
        self.activate()


def _nothing() -> None:
    return None


def gated(call: Callable[[Any], Any], gate: Gate) -> Callable[[Any], Any]:
    """``call`` through ``gate``: a rejection (``RetryAfter``) is retried, not counted."""

    async def limited(item: Any) -> Any:
        rejections = 0
        while True:
            await gate.enter(item)
            started = anyio.current_time()
            try:
                value = await call(item)
            except RetryAfter as exc:
                paused = gate.rejected_call(exc)
                rejections += 1
                if rejections >= MAX_REJECTIONS:
                    raise ItemError(f"rejected {rejections} times in a row, last: {exc}") from exc
                if not paused:  # the pool goes on: this item alone backs off
                    await back_off(exc, rejections)
                continue
            except BaseException:
                gate.done(started, ok=False)
                raise
            gate.done(started, ok=True)
            return value

    return limited


async def back_off(error: RetryAfter, rejections: int) -> None:
    """One item's wait after a rejection the pool did not pause for: its ``Retry-After``,
    else a little, growing with its rejections in a row."""
    if error.seconds:
        await anyio.sleep(error.seconds)
    else:
        await anyio.sleep(random.uniform(0.5, 1.0) * min(2.0, 0.02 * rejections))
