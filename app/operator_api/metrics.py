"""Prometheus metrics of the running bot, read live at scrape time from the pipeline's parts.

A ``CollectorRegistry`` per server (never prometheus-client's global one): two bots, or two
tests, in one process never share or double-register a metric. The collector keeps no copies
of the counters; it reads the hub, router, engine, journal and equity recorder on each scrape.
The one figure it must remember is the quote rate: ``tick()`` (the API's metric ticker) turns
the quote counter into quotes per second over its interval.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from app.report import open_pnl
from core.types import IN_POSITION

from app.operator_api.context import ApiContext

__all__ = ["BotMetrics", "CONTENT_TYPE_LATEST"]
ZERO = Decimal(0)


class BotMetrics:
    """The collector and its registry; ``render()`` is the ``/metrics`` body."""

    def __init__(self, ctx: ApiContext, *, ws_clients: Any = None) -> None:
        self._ctx = ctx
        self._ws_clients = ws_clients or (lambda: 0)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)  # type: ignore[arg-type]  # a custom collector: collect() only
        self._last: tuple[float, int] | None = None
        self.quotes_per_second = 0.0

    def tick(self) -> None:
        """Update the quote rate from the hub's counter since the previous tick."""
        now, count = time.monotonic(), self._ctx.hub.counters.quotes_processed
        if self._last is not None and now > self._last[0]:
            self.quotes_per_second = max(0.0, (count - self._last[1]) / (now - self._last[0]))
        self._last = (now, count)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # -- the collector --------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        ctx = self._ctx
        yield from self._feed(ctx)
        yield from self._signals(ctx)
        yield from self._orders(ctx)
        yield from self._money(ctx)
        yield from self._pairs(ctx)
        events = ctx.events.stats()
        yield _counter("pairs_bot_events_published", "Operator events published on the bus", events["published"])
        yield _counter("pairs_bot_events_dropped", "Operator events dropped for lagging subscribers",
                       events["dropped"])
        yield _gauge("pairs_bot_ws_clients", "WebSocket clients connected to /ws", self._ws_clients())
        yield _gauge("pairs_bot_uptime_seconds", "Seconds since the operator API started",
                     time.monotonic() - ctx.started_mono)

    def _feed(self, ctx: ApiContext) -> Iterator[Metric]:
        hub = ctx.hub
        yield _counter("pairs_bot_quotes", "Quotes handed to the signal generators", hub.counters.quotes_processed)
        yield _gauge("pairs_bot_quotes_per_second", "Quote rate over the last metric interval",
                     self.quotes_per_second)
        yield _gauge("pairs_bot_feed_lost", "1 while no quote of any symbol arrived for max_feed_outage_seconds",
                     1 if hub.feed_lost else 0)
        age = GaugeMetricFamily("pairs_bot_quote_age_seconds",
                                "Wall-clock seconds since the symbol's last accepted quote", labels=["symbol"])
        lag = GaugeMetricFamily("pairs_bot_feed_lag_seconds",
                                "This machine's clock minus the exchange event time of the symbol's last quote "
                                "(meaningless in a replay, whose exchange time is the data's)", labels=["symbol"])
        now_ms = time.time() * 1000
        for symbol in ctx.router.symbols:
            quote_age = hub.quote_age_ms(symbol)
            if quote_age is not None:
                age.add_metric([symbol], quote_age / 1000)
            quote = ctx.router.latest.get(symbol)
            if quote is not None:
                lag.add_metric([symbol], (now_ms - quote.ts_ms) / 1000)
        yield age
        yield lag

    def _signals(self, ctx: ApiContext) -> Iterator[Metric]:
        counters = ctx.router.counters
        yield _counter("pairs_bot_signals", "New signals (decisions; re-checks apart)", counters.signals)
        yield _counter("pairs_bot_signals_executed", "Signals whose trade was done", counters.executed)
        yield _counter("pairs_bot_signal_rechecks", "Re-fires of a held-back entry refused again", counters.rechecks)
        stats = ctx.engine.stats()
        refusals = CounterMetricFamily("pairs_bot_refusals", "Signals the engine refused, by reason", labels=["reason"])
        for reason, count in sorted(stats["refused_by_reason"].items()):
            refusals.add_metric([reason], count)
        yield refusals
        outcomes = CounterMetricFamily("pairs_bot_executions", "Engine results, by status", labels=["status"])
        for status, count in sorted(stats["outcomes"].items()):
            outcomes.add_metric([status], count)
        yield outcomes
        protocols = CounterMetricFamily("pairs_bot_protocol_events",
                                        "Safety-protocol counters of the engine (P1-P5, reconciliation)",
                                        labels=["counter"])
        for name, count in sorted(stats["protocols"].items()):
            protocols.add_metric([name], count)
        yield protocols

    def _orders(self, ctx: ApiContext) -> Iterator[Metric]:
        orders = GaugeMetricFamily("pairs_bot_orders", "Orders in the journal, by current status", labels=["status"])
        for status, count in sorted(ctx.journal.order_status_counts().items()):
            orders.add_metric([status], count)
        yield orders

    def _money(self, ctx: ApiContext) -> Iterator[Metric]:
        trips = [t for t in ctx.journal.round_trips() if not t.is_open and t.net_pnl is not None]
        realized = sum((t.net_pnl for t in trips if t.net_pnl is not None), ZERO)
        unrealized = GaugeMetricFamily("pairs_bot_unrealized_pnl_usdt",
                                       "Open legs marked to mid, net of their fees and funding", labels=["pair"])
        for pair_id, position in ctx.engine.positions.items():
            if position.qty_a != 0 or position.qty_b != 0:
                unrealized.add_metric([pair_id], float(open_pnl(ctx.journal, position, ctx.router.mid)))
        yield _gauge("pairs_bot_realized_pnl_usdt", "Net PnL of every closed round trip in the journal",
                     float(realized))
        yield unrealized
        yield _counter("pairs_bot_round_trips", "Closed round trips in the journal", len(trips))
        now = ctx.equity.current() if ctx.equity is not None else None
        if now is not None:
            yield _gauge("pairs_bot_equity_usdt", "Equity marked to market: start + realized since + unrealized",
                         float(now.equity_usdt))
        balance = ctx.engine.balance
        if balance is not None:
            yield _gauge("pairs_bot_account_equity_usdt", "The account's equity at the last balance read",
                         float(balance.total))

    def _pairs(self, ctx: ApiContext) -> Iterator[Metric]:
        engine = ctx.engine
        z = GaugeMetricFamily("pairs_bot_pair_z", "Live z-score of the pair's spread", labels=["pair"])
        state = GaugeMetricFamily("pairs_bot_pair_state", "1 for the pair's current lifecycle state",
                                  labels=["pair", "state"])
        for pair_id in engine.pairs:
            gen = ctx.router.generators.get(pair_id)
            value = gen.snapshot().z if gen is not None else float("nan")
            if value == value:  # not NaN
                z.add_metric([pair_id], value)
            state.add_metric([pair_id, engine.pair_state(pair_id).value], 1)
        yield z
        yield state
        yield _gauge("pairs_bot_open_pairs", "Pairs in position",
                     sum(1 for p in engine.pairs if engine.pair_state(p) in IN_POSITION))
        yield _gauge("pairs_bot_entries_paused", "1 while the operator paused new entries",
                     1 if engine.entry_gate.paused else 0)

    def snapshot(self) -> dict[str, Any]:
        """The periodic ``metric`` event: the figures a dashboard shows, JSON-ready."""
        ctx = self._ctx
        now = ctx.equity.current() if ctx.equity is not None else None
        pairs = []
        for pair_id in ctx.engine.pairs:
            gen = ctx.router.generators.get(pair_id)
            z = gen.snapshot().z if gen is not None else float("nan")
            pairs.append({"pair_id": pair_id, "state": ctx.engine.pair_state(pair_id).value,
                          "z": round(z, 4) if z == z else None})
        ages = [a for a in (ctx.hub.quote_age_ms(s) for s in ctx.router.symbols) if a is not None]
        return {"quotes_per_second": round(self.quotes_per_second, 3),
                "quotes": ctx.hub.counters.quotes_processed, "feed_lost": bool(ctx.hub.feed_lost),
                "max_quote_age_ms": max(ages) if ages else None, "signals": ctx.router.counters.signals,
                "executed": ctx.router.counters.executed, "entries_paused": ctx.engine.entry_gate.paused,
                "equity_usdt": None if now is None else str(now.equity_usdt),
                "equity_ts_ms": None if now is None else now.ts_ms, "pairs": pairs}


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
