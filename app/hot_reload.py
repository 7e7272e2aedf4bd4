"""Hot reload: ``pairs_config.json`` and the ``signal`` and ``risk`` sections of ``config.json``,
re-read while the bot runs (the original design's dynamic configuration).

Triggers: SIGHUP (main.py), a change of either file (polled: mtime, size and a hash of the
content, every ``reload.poll_seconds``; no dependency, and it works on every filesystem), or
``await reloader.reload(source)`` (the operator API's POST /config/reload).

Validation is the start's own (``load_app_config`` / ``load_pairs_config``): a file the start
would refuse is refused here with the same one line, logged as an error and returned, and nothing
of it is applied. A valid file is applied as the policies of docs/architecture.md, "Hot reload",
say: thresholds in place at the next quote; a new window (hedge ratio, lookback, transform) only
once the pair is flat; a new pair warms up and trades; a removed pair exits through the engine
and then stops being traded; risk limits at the next entry; anything else waits for a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

from loguru import logger
from pydantic import BaseModel

from app.pipeline import SignalRouter
from core.config import AppConfig, PairConfig, SignalParams, load_app_config, load_pairs_config, signal_params
from core.errors import ConfigurationError, PairsBotError
from core.events import EventBus, EventKind, Severity
from core.types import IN_POSITION, PairState
from execution.engine import ExecutionEngine
from execution.journal_models import JournalError
from execution.results import PairSpec
from signals.generator import WINDOW_FIELDS, SignalGenerator
from signals.market_data import MarketDataHub

#: The sections of config.json a reload applies; a change anywhere else waits for a restart.
HOT_SECTIONS = ("signal", "risk")
#: How often a removed pair's FLATTEN is sent again while its exit keeps failing.
FLATTEN_RETRY_SECONDS = 5.0
#: ``resolve(pairs)`` -> each tradable pair with its two resolved symbols (app/assemble.py tradable_pairs).
PairResolver = Callable[[list[PairConfig]], list[tuple[PairConfig, str, str]]]
_PARAM_FIELDS = tuple(f.name for f in fields(SignalParams) if f.name not in ("pair_id", "leg_a", "leg_b"))


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What a reload did. ``ok`` False: refused, ``message`` is the one-line error, nothing applied.
    ``changes``: one line per change, applied or not (each says which)."""

    ok: bool
    message: str
    changes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FileStamp:
    """A file as the watcher last saw it: ``key`` (mtime, size) says when to look again, ``digest``
    whether the content really changed (an editor that rewrites the same bytes changes nothing)."""

    key: tuple[int, int] | None
    digest: str | None


def file_stamp(path: Path, known: FileStamp | None = None) -> FileStamp:
    """Stat ``path``; read and hash it only when its mtime or size differ from ``known``'s."""
    try:
        stat = path.stat()
    except OSError:
        return FileStamp(None, None)
    key = (stat.st_mtime_ns, stat.st_size)
    if known is not None and known.key == key:
        return known
    try:
        digest = hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    except OSError:
        digest = None
    return FileStamp(key, digest)


@dataclass(slots=True)
class ReloadCounters:
    applied: int = 0
    refused: int = 0
    file_changes: int = 0


class ConfigReloader:
    """Owns the running configuration's hot part and applies valid new versions of it."""

    name = "hot_reload"

    def __init__(self, *, config_path: Path, pairs_path: Path, config: AppConfig, pairs: list[PairConfig],
                 router: SignalRouter, engine: ExecutionEngine | None, hub: MarketDataHub,
                 resolve: PairResolver, events: EventBus | None = None) -> None:
        self.config_path, self.pairs_path = Path(config_path), Path(pairs_path)
        self.config = config  # what runs: the hot sections of the last applied file, the rest from the start
        self.pairs = {p.pair_id: p for p in pairs if p.enabled and p.pair_id in router.generators}
        self._router, self._engine, self._hub = router, engine, hub
        self._resolve = resolve
        self._events = events
        self._retiring: dict[str, tuple[str, PairConfig]] = {}  # removed pair -> (why, its config); routed until flat
        self._flatten_sent: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stamps = self._read_stamps()
        self._settling = False  # a change was seen; reloaded once the files held still for one poll
        self.counters = ReloadCounters()
        self.last: ReloadResult | None = None

    # -- component ----------------------------------------------------------------------------
    async def start(self) -> None:
        self._stamps = self._read_stamps()
        self._spawn(self._watch(), "hot_reload.watch")
        logger.info("hot reload: SIGHUP{} re-reads {} and {} (signal, risk)",
                    f", or a change of either file (polled every {self.config.reload.poll_seconds:g} s)"
                    if self.config.reload.watch_files else "", self.pairs_path.name, self.config_path.name)

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stats(self) -> dict[str, Any]:
        return {"applied": self.counters.applied, "refused": self.counters.refused,
                "file_changes": self.counters.file_changes, "retiring": sorted(self._retiring)}

    def reload_soon(self, source: str) -> None:
        """Start a reload in a task of this component's (a signal handler cannot await)."""
        self._spawn(self.reload(source), f"hot_reload.{source}")

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.opt(exception=task.exception()).error("hot reload task {} died", task.get_name())

    # -- the reload ---------------------------------------------------------------------------
    async def reload(self, source: str) -> ReloadResult:
        """Re-read both files; apply them if valid (see the module docstring), else change nothing."""
        async with self._lock:
            self._stamps, self._settling = self._read_stamps(), False  # what this reload reads
            try:
                config = load_app_config(self.config_path)
                pairs = load_pairs_config(self.pairs_path, config.signal, risk=config.risk)
            except ConfigurationError as exc:
                result = ReloadResult(False, str(exc), [])
                self.counters.refused += 1
                logger.error("config reload ({}) refused, the running configuration is unchanged: {}", source, exc)
            else:
                changes = await self._apply(config, pairs, source)
                self.counters.applied += 1
                result = ReloadResult(True, f"config reloaded ({source}): " + (
                    f"{len(changes)} change(s)" if changes else "no change"), changes)
                logger.info("{}", result.message)
            self.last = result
            if self._events is not None:
                self._events.publish(EventKind.ALERT, {"alert": "config_reload", "source": source, "ok": result.ok,
                                                       "message": result.message, "changes": result.changes},
                                     severity=Severity.INFO if result.ok else Severity.WARNING)
            return result

    async def _apply(self, new: AppConfig, pairs: list[PairConfig], source: str) -> list[str]:
        old = self.config
        changes: list[str] = []

        def say(line: str, *, restart: bool = False) -> None:
            changes.append(line)
            (logger.warning if restart else logger.info)("config reload ({}): {}", source, line)

        kept_sections = {}
        for name in AppConfig.model_fields:
            if name in HOT_SECTIONS or getattr(old, name) == getattr(new, name):
                continue
            kept_sections[name] = getattr(old, name)
            kind = "section" if isinstance(getattr(new, name), BaseModel) or isinstance(getattr(old, name), BaseModel) \
                else "setting"
            say(f"{name} {kind} changed: restart to apply", restart=True)
        signal = new.signal
        if signal.bar_seconds != old.signal.bar_seconds:
            say(f"signal.bar_seconds {old.signal.bar_seconds} -> {signal.bar_seconds}: restart to apply "
                "(every pair shares one bar size)", restart=True)
            signal = signal.model_copy(update={"bar_seconds": old.signal.bar_seconds})
        applied = new.model_copy(update={**kept_sections, "signal": signal})

        if new.risk != old.risk and self._engine is not None:
            self._engine.set_risk(new.risk)
            for line in _diff("risk", old.risk, new.risk):
                say(f"{line} (from the next entry)")
        if (signal.max_quote_age_ms, signal.max_feed_outage_seconds) != \
                (old.signal.max_quote_age_ms, old.signal.max_feed_outage_seconds):
            self._hub.set_limits(max_quote_age_ms=signal.max_quote_age_ms,
                                 max_feed_outage_s=signal.max_feed_outage_seconds)
        if signal.on_feed_loss != old.signal.on_feed_loss:
            self._router.set_feed_loss_policy(signal.on_feed_loss)
        self.config = applied

        wanted = {p.pair_id: p for p in pairs if p.enabled}
        disabled = {p.pair_id for p in pairs if not p.enabled}
        for pair_id in [p for p in self.pairs if p not in wanted]:
            why = "disabled in" if pair_id in disabled else "removed from"
            self._retire(pair_id, f"{why} {self.pairs_path.name}")
            say(f"{pair_id}: {why} {self.pairs_path.name}: no new entries; " + self._retire_progress(pair_id))
        for pair_id, cfg in wanted.items():
            if pair_id in self._retiring:  # back before its exit finished: trade it again
                self._unretire(pair_id)
                say(f"{pair_id}: back in {self.pairs_path.name}: entries allowed again")
            if pair_id in self.pairs:
                for line in self._change_pair(self.pairs[pair_id], cfg, old.signal, signal):
                    say(line)
        added = [cfg for pair_id, cfg in wanted.items() if pair_id not in self.pairs]
        if added:
            for line in await self._add_pairs(added, signal):
                say(line)
        self._advance_retiring()
        return changes

    # -- pairs --------------------------------------------------------------------------------
    def _change_pair(self, old_cfg: PairConfig, cfg: PairConfig, old_signal: Any, signal: Any) -> list[str]:
        pair_id = cfg.pair_id
        if (cfg.leg_a, cfg.leg_b) != (old_cfg.leg_a, old_cfg.leg_b):
            return [f"{pair_id}: legs changed ({old_cfg.leg_a}/{old_cfg.leg_b} -> {cfg.leg_a}/{cfg.leg_b}): "
                    "restart to apply (or remove the pair, reload, then add it back)"]
        before, after = signal_params(old_signal, old_cfg), signal_params(signal, cfg)
        self.pairs[pair_id] = cfg
        gen = self._router.generators[pair_id]
        lines = [f"{pair_id}: {name} {getattr(before, name)} -> {getattr(after, name)} (next quote)"
                 for name in _PARAM_FIELDS if name not in WINDOW_FIELDS and getattr(before, name) != getattr(after, name)]
        current_window = {name: getattr(gen.params, name) for name in WINDOW_FIELDS}
        gen.retune(replace(after, **current_window))
        old_notional, notional = self._notional(old_cfg), self._notional(cfg)
        if notional != old_notional:
            lines.append(f"{pair_id}: notional {old_notional} -> {notional} USDT (next entry)")
        engine = self._engine
        if engine is not None and pair_id in engine.pairs and notional != engine.pairs[pair_id].notional_usdt:
            engine.replace_spec(replace(engine.pairs[pair_id], notional_usdt=notional))
        window = [f"{name} {current_window[name]} -> {getattr(after, name)}" for name in WINDOW_FIELDS
                  if current_window[name] != getattr(after, name)]
        if not window:
            if self._router.pending_rewindow(pair_id) is not None:
                self._router.cancel_rewindow(pair_id)
                lines.append(f"{pair_id}: the new window waiting for flat is cancelled (back to the running one)")
            return lines
        if self._router.pending_rewindow(pair_id) == after:  # the same new window is already waiting
            return lines
        spec = None
        if engine is not None and pair_id in engine.pairs:
            spec = replace(engine.pairs[pair_id], hedge_ratio=Decimal(repr(after.hedge_ratio)),
                           price_transform=after.price_transform, notional_usdt=notional,
                           hedge_ratio_mode=after.hedge_ratio_mode)
        if self._router.schedule_rewindow(pair_id, after, spec):
            lines.append(f"{pair_id}: {', '.join(window)}: new window, warming up")
        else:
            state = engine.pair_state(pair_id) if engine is not None else gen.state
            lines.append(f"{pair_id}: {', '.join(window)}: waits until the pair is flat (now {state.value})")
            logger.info("{}: {} waits until the pair is flat (now {})", pair_id, ", ".join(window), state.value)
        return lines

    async def _add_pairs(self, added: list[PairConfig], signal: Any) -> list[str]:
        lines: list[str] = []
        try:
            tradable = self._resolve(added)
        except ConfigurationError:  # none of them tradable: each was said by a warning already
            tradable = []
        found = {cfg.pair_id for cfg, _, _ in tradable}
        lines += [f"{cfg.pair_id}: not added: a leg is not listed as an active perpetual (see the warning)"
                  for cfg in added if cfg.pair_id not in found]
        for cfg, symbol_a, symbol_b in tradable:
            params = signal_params(signal, cfg)
            spec = PairSpec(cfg.pair_id, symbol_a, symbol_b, Decimal(repr(cfg.hedge_ratio)), self._notional(cfg),
                            params.price_transform, params.hedge_ratio_mode)
            if self._engine is not None:
                try:
                    await self._engine.add_pair(spec)
                except (PairsBotError, JournalError) as exc:  # the next reload tries again
                    logger.error("{}: not added: {}: {}", cfg.pair_id, type(exc).__name__, exc)
                    lines.append(f"{cfg.pair_id}: not added: {type(exc).__name__}: {exc} (reload to retry)")
                    continue
            self._router.add_generator(SignalGenerator(params, symbol_a=symbol_a, symbol_b=symbol_b))
            for symbol in (symbol_a, symbol_b):
                if symbol not in self._hub.symbols:
                    self._hub.subscribe(symbol, self._router.on_quote)
            self.pairs[cfg.pair_id] = cfg
            lines.append(f"{cfg.pair_id}: added ({symbol_a} / {symbol_b}, hedge ratio {cfg.hedge_ratio}): "
                         "warming up, then trading")
        return lines

    def _notional(self, cfg: PairConfig) -> Decimal:
        return Decimal(repr(cfg.notional_usdt or self.config.execution.notional_per_pair_usdt))

    def _retire(self, pair_id: str, reason: str) -> None:
        self._retiring[pair_id] = (reason, self.pairs.pop(pair_id))
        self._router.cancel_rewindow(pair_id)
        self._router.generators[pair_id].block_entries(reason)
        if self._engine is not None:
            self._engine.retire(pair_id, reason)

    def _unretire(self, pair_id: str) -> None:
        _, self.pairs[pair_id] = self._retiring.pop(pair_id)  # compared with the file's version next
        self._flatten_sent.pop(pair_id, None)
        gen = self._router.generators[pair_id]
        gen.block_entries(None)
        if self._engine is not None:
            self._engine.unretire(pair_id)

    def _retire_progress(self, pair_id: str) -> str:
        state = self._state(pair_id)
        if state is PairState.FLAT:
            return "flat: no longer traded"
        if state in (PairState.LONG_SPREAD, PairState.SHORT_SPREAD, PairState.ENTERING, PairState.EXITING):
            return f"{state.value}: its position is closed through the engine (FLATTEN), then it is no longer traded"
        return f"{state.value}: waits for the engine (or an operator) before it can be closed"

    def _state(self, pair_id: str) -> PairState:
        if self._engine is not None:
            return self._engine.pair_state(pair_id)
        return self._router.generators[pair_id].state

    def _advance_retiring(self) -> None:
        """Move each removed pair on: flatten it when in position and idle, drop it when flat."""
        for pair_id, (reason, _) in list(self._retiring.items()):
            gen = self._router.generators.get(pair_id)
            if gen is None:
                del self._retiring[pair_id]
                continue
            state = self._state(pair_id)
            if gen.in_flight:
                continue
            if state is PairState.FLAT and gen.state is PairState.FLAT:
                self._router.remove_generator(pair_id)
                del self._retiring[pair_id]
                self._flatten_sent.pop(pair_id, None)
                logger.info("{}: {}: flat, no longer traded", pair_id, reason)
            elif state in IN_POSITION and gen.state is state:
                now = time.monotonic()
                if now - self._flatten_sent.get(pair_id, -FLATTEN_RETRY_SECONDS) >= FLATTEN_RETRY_SECONDS \
                        and self._router.flatten(pair_id, reason):
                    self._flatten_sent[pair_id] = now

    # -- files ----------------------------------------------------------------------------------
    def _read_stamps(self) -> tuple[FileStamp, FileStamp]:
        known = getattr(self, "_stamps", (None, None))
        return file_stamp(self.config_path, known[0]), file_stamp(self.pairs_path, known[1])

    async def _watch(self) -> None:
        """Every poll: removed pairs move on; a file whose content changed and then held still for
        one poll (an editor's write is complete) is reloaded."""
        poll = self.config.reload.poll_seconds
        while True:
            await asyncio.sleep(poll)
            self._advance_retiring()
            if not self.config.reload.watch_files:
                continue
            before = self._stamps
            self._stamps = self._read_stamps()
            if [s.digest for s in self._stamps] != [s.digest for s in before]:
                self._settling = True  # changed: give the writer one poll to finish
            elif self._settling:
                self._settling = False
                self.counters.file_changes += 1
                await self.reload("file change")


def _diff(prefix: str, old: BaseModel, new: BaseModel) -> list[str]:
    return [f"{prefix}.{name} {getattr(old, name)} -> {getattr(new, name)}" for name in type(new).model_fields
            if getattr(old, name) != getattr(new, name)]
