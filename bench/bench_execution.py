"""Benchmark of the execution engine against the simulator through real ccxt. Prints one JSON object.

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/bench_execution.py [--n 200] [--in-process]``.

The simulator runs as its own process by default (``python -m simulator --port 0``, replay
paused), so on a 2-core box the exchange does not share the bot's event loop; ``--in-process``
runs it inside the bench's loop instead (as ``main.py demo`` does). No latency is injected.

What is measured, all in one run so the ratios hold on any machine:

* ``baseline``: bare ccxt ``create_order`` (market, with a clientOrderId) round trips, one at a
  time and two at once (``asyncio.gather``: the floor for "both legs acknowledged").
* ``engine``: ``--n`` entry + exit round trips of one pair through ``ExecutionEngine`` built as
  ``app/assemble.py`` builds it (``CcxtExchange``, demo ``Journal`` with WAL + synchronous=FULL).
  - ``ack_ms``: signal received -> both entry legs acknowledged (``engine.latencies()``);
  - ``filled_ms``: signal received -> both legs final, fills recorded (entries and exits);
  - ``execute_signal_ms``: the whole call, including the balance refresh after it;
  - ``engine_overhead_ms``: ``execute_signal`` time minus the time during which at least one
    adapter call was in flight (a thin timing wrapper around the adapter, bench-only; the union
    of intervals, so two concurrent legs are not counted twice). Journal writes made while a
    leg is in flight are hidden in that union, which is why ``journal`` is reported separately;
  - ``journal``: cost of committing the intents of one execution (``record_order_intents``: both legs, one transaction), and of all journal writes per
    execution (wrapped on the instance, bench-only).
* ``variants`` (fewer round trips each): the same engine with the journal's connection switched
  to ``synchronous=NORMAL`` (bench-only PRAGMA: how much of the latency is fsync), and with
  ccxt's ``enableRateLimit`` on (what the shipped config.json uses for a live venue): binanceusdm
  charges an order 4 tokens of a 50 ms-per-token leaky bucket that earns no credit while idle,
  so the second leg always leaves ~200 ms after the first.
* ``targets``: ack p50 <= 5 ms and p99 <= 20 ms, with ok flags.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import ccxt.async_support as ccxt_async  # noqa: E402
from loguru import logger  # noqa: E402

from core.config import ExchangeConfig, ExecutionConfig, RiskConfig, Secrets  # noqa: E402
from core.types import SignalType, TradingSignal  # noqa: E402
from core.venue import ccxt_client_config, point_at_local_exchange  # noqa: E402
from execution.engine import ExecutionEngine  # noqa: E402
from execution.exchange import CcxtExchange  # noqa: E402
from execution.journal import Journal  # noqa: E402
from execution.results import PairSpec  # noqa: E402
from simulator.config import DEFAULT_API_KEY, DEFAULT_API_SECRET  # noqa: E402

SYMBOLS = ("EOSUSDT", "AXSUSDT")
ACK_P50_TARGET_MS = 5.0
ACK_P99_TARGET_MS = 20.0
JOURNAL_WRITES = ("record_signal", "set_signal_outcome", "record_order_intent", "record_order_intents", "update_order", "record_fill",
                  "save_position", "open_round_trip", "close_round_trip")


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))], 3)


def summary(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50": pct(values, 50), "p99": pct(values, 99), "max": pct(values, 100),
            "mean": round(statistics.fmean(values), 3) if values else None}


# ----------------------------------------------------------------------------- instrumentation


class TimingAdapter:
    """Delegates to the real adapter; accumulates the wall time during which >= 1 call is in flight."""

    def __init__(self, inner: CcxtExchange) -> None:
        self._inner = inner
        self._active = 0
        self._since = 0.0
        self.busy_s = 0.0
        self.calls = 0
        self.create_starts: list[float] = []  # perf_counter when each create_order was called

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def timed(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if name == "create_order":
                self.create_starts.append(time.perf_counter())
            if self._active == 0:
                self._since = time.perf_counter()
            self._active += 1
            try:
                return await attr(*args, **kwargs)
            finally:
                self._active -= 1
                if self._active == 0:
                    self.busy_s += time.perf_counter() - self._since

        return timed


class JournalTimer:
    """Times the journal's write methods on one instance (per-call seconds, by method)."""

    def __init__(self, journal: Journal) -> None:
        self.by_method: dict[str, list[float]] = {name: [] for name in JOURNAL_WRITES}
        for name in JOURNAL_WRITES:
            setattr(journal, name, self._wrap(getattr(journal, name), self.by_method[name]))

    @staticmethod
    def _wrap(method: Callable[..., Any], sink: list[float]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                sink.append(time.perf_counter() - start)
        return timed

    def total_s(self) -> float:
        return sum(sum(v) for v in self.by_method.values())


# ----------------------------------------------------------------------------- simulator


class Venue:
    """The simulator: a subprocess (default) or in-process; paused so prices stay fixed."""

    def __init__(self, in_process: bool) -> None:
        self.in_process = in_process
        self.base_url = ""
        self._proc: Any = None
        self._server: Any = None

    async def start(self) -> None:
        args = ("--symbols", ",".join(SYMBOLS), "--speed", "1", "--warmup-bars", "900", "--log-level", "WARNING")
        if self.in_process:
            from simulator.config import ReplayConfig, SimulatorConfig
            from simulator.server import SimulatorServer

            self._server = SimulatorServer(SimulatorConfig(symbols=SYMBOLS, port=0,
                                                           replay=ReplayConfig(speed=1.0, warmup_bars=900)))
            await self._server.start()
            self._server.pause()
            self.base_url = self._server.base_url
            return
        from tests.conftest import start_simulator

        self._proc = start_simulator(*args)
        self.base_url = self._proc.base_url
        self._admin("/sim/replay", {"paused": True})

    def _admin(self, path: str, payload: dict[str, Any]) -> Any:
        request = urllib.request.Request(self.base_url + path, data=json.dumps(payload).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read().decode())

    def reset(self) -> None:
        """Flat account between runs, so every run starts from the same balance."""
        if self._server is not None:
            self._server.reset()
        else:
            self._admin("/sim/reset", {})

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
        if self._proc is not None:
            self._proc.stop()


def ccxt_client(base_url: str, *, rate_limit: bool = False) -> Any:
    client = ccxt_async.binanceusdm(ccxt_client_config(api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET,
                                                       timeout_ms=5000, enable_rate_limit=rate_limit))
    point_at_local_exchange(client, base_url=base_url)
    return client


# ----------------------------------------------------------------------------- runs


async def baseline(venue: Venue, n: int) -> dict[str, Any]:
    client = ccxt_client(venue.base_url)
    single: list[float] = []
    pair: list[float] = []
    try:
        await client.load_markets()
        for i in range(n):
            side = "sell" if i % 2 == 0 else "buy"
            start = time.perf_counter()
            await client.create_order("EOS/USDT:USDT", "market", side, 10, None, {"newClientOrderId": f"bl-s{i}"})
            single.append((time.perf_counter() - start) * 1000)
        for i in range(n):
            a, b = ("sell", "buy") if i % 2 == 0 else ("buy", "sell")
            start = time.perf_counter()
            await asyncio.gather(
                client.create_order("EOS/USDT:USDT", "market", a, 10, None, {"newClientOrderId": f"bl-a{i}"}),
                client.create_order("AXS/USDT:USDT", "market", b, 1, None, {"newClientOrderId": f"bl-b{i}"}))
            pair.append((time.perf_counter() - start) * 1000)
    finally:
        await client.close()
    venue.reset()
    return {"create_order_ms": summary(single), "two_concurrent_create_orders_ms": summary(pair)}


def sqlite_commit_baseline(tmp: Path, n: int) -> dict[str, Any]:
    """A bare one-row commit in WAL mode, FULL and NORMAL: the floor under every journal write."""
    import sqlite3

    out: dict[str, Any] = {}
    for synchronous in ("FULL", "NORMAL"):
        conn = sqlite3.connect(tmp / f"commit-{synchronous}.sqlite", isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("CREATE TABLE t (a INTEGER)")
        times = []
        for i in range(n):
            start = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?)", (i,))
            conn.execute("COMMIT")
            times.append((time.perf_counter() - start) * 1000)
        conn.close()
        out[f"wal_{synchronous.lower()}_commit_ms"] = summary(times)
    return out


async def engine_run(venue: Venue, n: int, *, rate_limit: bool = False, synchronous: str | None = None,
                     tmp: Path) -> dict[str, Any]:
    inner = CcxtExchange(ExchangeConfig(base_url=venue.base_url, enable_rate_limit=rate_limit),
                         Secrets(DEFAULT_API_KEY, DEFAULT_API_SECRET, "bench"))
    adapter = TimingAdapter(inner)
    journal = Journal.open(tmp / f"journal-{time.monotonic_ns()}.sqlite", mode="demo")
    if synchronous is not None:
        journal._db().execute(f"PRAGMA synchronous = {synchronous}")  # bench-only experiment
    timer = JournalTimer(journal)
    await inner.load_markets()
    spec = PairSpec("EOS_AXS", inner.resolve_symbol("EOS/USDT"), inner.resolve_symbol("AXS/USDT"), Decimal("1.1664"),
                    Decimal(400), "log")
    engine = ExecutionEngine(adapter=adapter, journal=journal, pairs=[spec],
                             execution=ExecutionConfig(reconcile_interval_seconds=3600),
                             risk=RiskConfig(max_daily_loss_usdt=10_000), leverage=2, margin_mode="isolated",
                             mids=lambda s: None, external_positions_path=tmp / "external.json")
    await engine.start()
    totals: list[float] = []
    overheads: list[float] = []
    journal_per_exec: list[float] = []
    calls_per_exec: list[int] = []
    second_leg_out: list[float] = []  # signal received -> the second entry leg handed to ccxt
    ts = 1_688_744_100_000
    failures = 0
    try:
        for i in range(n):
            for kind in (SignalType.ENTER_LONG_SPREAD, SignalType.EXIT):
                ts += 2_000
                signal = TradingSignal(f"b{i}-{kind.side_label}", "EOS_AXS", kind, 0.0, 0.0, 0.0, 1.0, 0.7295, 5.9435,
                                       1.1664, ts)
                busy, journal_s, calls = adapter.busy_s, timer.total_s(), adapter.calls
                adapter.create_starts.clear()
                start = time.perf_counter()
                result = await engine.execute_signal(signal)
                total = time.perf_counter() - start
                if kind.is_entry and len(adapter.create_starts) >= 2:
                    second_leg_out.append((adapter.create_starts[1] - start) * 1000)
                failures += not result.executed
                totals.append(total * 1000)
                overheads.append((total - (adapter.busy_s - busy)) * 1000)
                journal_per_exec.append((timer.total_s() - journal_s) * 1000)
                calls_per_exec.append(adapter.calls - calls)
    finally:
        await engine.stop()
        journal.close()
    venue.reset()
    lat = engine.latencies()
    intents = [s * 1000 for s in timer.by_method["record_order_intents"]]
    writes = {name: pct([s * 1000 for s in v], 50) for name, v in timer.by_method.items() if v}
    return {
        "round_trips": n, "executions_not_executed": failures,
        "ack_ms": summary(lat["ack_ms"]),
        "ack_breakdown_ms": {"signal_to_second_leg_sent": summary(second_leg_out),
                             "second_leg_sent_to_ack": summary([a - b for a, b in zip(lat["ack_ms"], second_leg_out)])},
        "filled_ms": summary(lat["fill_ms"]),
        "execute_signal_ms": summary(totals),
        "engine_overhead_ms": summary(overheads),
        "journal": {"record_order_intents_ms": summary(intents), "all_writes_per_execution_ms": summary(journal_per_exec),
                    "write_p50_ms_by_method": writes},
        "adapter_calls_per_execution": statistics.fmean(calls_per_exec),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    venue = Venue(args.in_process)
    await venue.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-exec-") as folder:
            tmp = Path(folder)
            base = await baseline(venue, args.n)
            base["sqlite"] = sqlite_commit_baseline(tmp, args.n)
            engine = await engine_run(venue, args.n, tmp=tmp)
            variants = {
                "journal_synchronous_normal": await engine_run(venue, args.variant_n, synchronous="NORMAL", tmp=tmp),
                "ccxt_enable_rate_limit": await engine_run(venue, args.rate_limit_n, rate_limit=True, tmp=tmp),
            }
    finally:
        await venue.stop()
    ack = engine["ack_ms"]
    pair_p50 = base["two_concurrent_create_orders_ms"]["p50"]
    return {
        "bench": "execution",
        "simulator": "in-process" if args.in_process else "subprocess",
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "baseline_ccxt": base,
        "engine": engine,
        "ratios": {
            "ack_p50_over_two_concurrent_create_orders_p50": round(ack["p50"] / pair_p50, 2) if pair_p50 else None,
            "engine_overhead_p50_over_execute_signal_p50": round(
                engine["engine_overhead_ms"]["p50"] / engine["execute_signal_ms"]["p50"], 2),
        },
        "variants": {name: {"ack_ms": v["ack_ms"], "ack_breakdown_ms": v["ack_breakdown_ms"], "filled_ms": v["filled_ms"],
                            "engine_overhead_ms": v["engine_overhead_ms"],
                            "record_order_intents_ms": v["journal"]["record_order_intents_ms"]}
                     for name, v in variants.items()},
        "targets": {
            "ack_p50_ms": {"target": ACK_P50_TARGET_MS, "value": ack["p50"], "ok": ack["p50"] <= ACK_P50_TARGET_MS},
            "ack_p99_ms": {"target": ACK_P99_TARGET_MS, "value": ack["p99"], "ok": ack["p99"] <= ACK_P99_TARGET_MS},
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="entry+exit round trips (default: %(default)s)")
    parser.add_argument("--variant-n", type=int, default=100, help="round trips per variant (default: %(default)s)")
    parser.add_argument("--rate-limit-n", type=int, default=10,
                        help="round trips with ccxt's rate limit on, ~1.4 s each (default: %(default)s)")
    parser.add_argument("--in-process", action="store_true", help="run the simulator in the bench's event loop")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
