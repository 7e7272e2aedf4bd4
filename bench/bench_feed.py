"""Benchmark of the market-data path: simulator -> real ccxt.pro -> MarketDataHub -> generators.

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/bench_feed.py [--quick]``. Prints one JSON
object on stdout (progress goes to stderr). About 2.5 minutes; ``--quick`` about 40 s.

Setup. The simulator runs in its own process (this file with ``--serve``: a ``SimulatorServer``
replaying the bundled 5-minute candles of the 11 symbols the shipped ``pairs_config.json``
trades) and the client in this one, on a single asyncio thread: the client's numbers are for
one core. On the 2-core dev box that is the honest arrangement; server and client on one event
loop would share that core and halve both. The ``--serve`` wrapper instead of
``python -m simulator`` exists for two reasons only: it reports the replay clock's anchor at
every rate change, and it timestamps each batch of frames as it is written to the socket.
Control goes over its stdin/stdout, one JSON line per command.

Offered rate: quotes/s = symbols x steps_per_bar x speed / 300 (``simulator/README.md``); the
bench sets the speed for each rate step after pausing, so every step starts from an empty pipe.

Modes, all on the same stream (the baseline is measured in the same run):

* ``hub_generators``: the bot's path. One hub, the 10 shipped pairs as ``SignalGenerator``s
  (shipped ``config.json`` signal settings, windows warmed up from ``fetch_history``), wired
  as the bot does: ``update(quote)`` inline, a signal completed at once as "not executed"
  (execution is out of scope here, and this keeps every pair deciding).
* ``hub_noop``: the same hub with no generators: a consumer that only timestamps.
* ``bare_ccxt``: a plain ``watch_bids_asks`` loop on a ``ccxt.pro.binanceusdm`` (no hub); the
  ceiling of the ccxt client itself. Its lag is that of the quote each call returns.

Lag, in wall time on the one ``CLOCK_MONOTONIC`` both processes share:

* ``lag_event_ms`` = processing time minus the wall time at which the quote's exchange event
  time ``E`` falls on the simulator's replay clock (``anchor_wall + (E - anchor_ms) / speed``,
  the anchor reported by the server when the rate is set). This is "exchange event to
  decision": it includes the simulator's own batching (one loop iteration, ~1 ms), as a real
  venue's batching is part of what a bot sees.
* ``lag_send_ms`` = processing time minus the time the server wrote the batch holding that
  quote to the socket: transport + ccxt + hub + generators only.

The processing time is taken by a consumer subscribed after the generators of that symbol, so it
is after every decision the quote caused. A rate is "kept" when the lag does not grow over the
window (median of the last quarter within 5 ms of the first quarter's), the client received at
least 95 % of what was offered, and the server dropped nothing for a slow client (it drops
batches once 8 MB wait in the socket, which would otherwise cap the lag and hide the overload).
The dev box is shared, so a step that fails is run once more; a ladder stops at the first rate
that fails twice (both attempts are in the JSON), and ccxt's own cost per frame is measured in
this process before each ladder (``ccxt_frame_cost``: ``handle_message`` on ready-parsed
frames, no network) to tell a slow core from a slow path. At 2,000 quotes/s the same stream is
also read by a bare aiohttp + orjson client: the transport floor of the lag.

Trading-ready: from constructing the hub to every generator's window full: ccxt client,
``load_markets``, ``fetch_history`` for every leg (concurrent), generators built and warmed up.
Median of several runs after one untimed run (numba cache and imports warm). Also reported:
until every leg's first live quote has been processed.

This file imports ccxt directly for the bare-client baseline; the bot itself reaches ccxt only
through ``signals/market_data.py`` and ``execution/exchange.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from loguru import logger  # noqa: E402

TARGETS = {"throughput_qps": 20_000.0, "lag_p99_ms_at_2k": 5.0, "trading_ready_s": 3.0}
RATES = (2_000, 5_000, 10_000, 15_000, 20_000, 25_000, 30_000, 40_000)
QUICK_RATES = (2_000, 20_000, 40_000)
STEPS_PER_BAR = 600  # 11 symbols x 600 steps = one 5-minute bar per 6,600 quotes
BAR_SECONDS = 300
GROWTH_MS = 5.0  # last-quarter median lag may exceed the first quarter's by this much
MIN_DELIVERED = 0.95


def log(message: str) -> None:
    print(f"[bench_feed] {message}", file=sys.stderr, flush=True)


# =============================================================================================
# Server side: ``--serve`` runs the simulator and answers commands on stdin.
# =============================================================================================

async def serve(symbols: tuple[str, ...], steps_per_bar: int, out_dir: Path) -> None:
    from simulator.config import ReplayConfig, SimulatorConfig
    from simulator.server import SimulatorServer

    config = SimulatorConfig(symbols=symbols, port=0,
                             replay=ReplayConfig(speed=1.0, steps_per_bar=steps_per_bar,
                                                 warmup_bars=1000, seed=7))
    async with SimulatorServer(config) as sim:
        sim.pause()
        batches: list[tuple[float, int, int, int]] = []  # (sent at, first ts, last ts, frames)
        recording = False
        broadcast = sim.hub.broadcast_quotes

        def timed_broadcast(events: list[Any]) -> None:
            broadcast(events)
            if recording and events:
                batches.append((time.monotonic(), events[0][1], events[-1][1], len(events)))

        sim.hub.broadcast_quotes = timed_broadcast  # type: ignore[method-assign]
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        reply({"ready": True, "base_url": sim.base_url, "symbols": list(sim.replay.symbols)})
        cpu0 = wall0 = 0.0
        ws0: dict[str, Any] = {}
        while line := await reader.readline():
            cmd = json.loads(line)
            kind = cmd["cmd"]
            if kind == "rate":
                n = len(sim.replay.symbols)
                speed = cmd["qps"] * BAR_SECONDS / (n * steps_per_bar)
                sim.pause()
                sim.set_speed(speed)
                anchor_ms = sim.replay.now_ms
                batches.clear()
                recording = True
                ws0 = dict(sim.stats()["ws"])
                cpu0, wall0 = time.process_time(), time.monotonic()
                before = time.monotonic()
                sim.resume()  # the clock's wall anchor is set inside this call
                after = time.monotonic()
                reply({"speed": speed, "anchor_ms": anchor_ms, "anchor_wall": (before + after) / 2,
                       "anchor_uncertainty_s": after - before})
            elif kind == "pause":
                sim.pause()
                recording = False
                ws1 = sim.stats()["ws"]
                path = out_dir / f"batches-{cmd['tag']}.npy"
                np.save(path, np.array(batches, dtype=np.float64).reshape(-1, 4))
                wall = time.monotonic() - wall0
                reply({"batches": str(path), "replay_ms": sim.replay.now_ms,
                       "frames_sent": ws1.get("frames_sent", 0) - ws0.get("frames_sent", 0),
                       "frames_dropped_slow_client": ws1.get("frames_dropped_slow_client", 0)
                       - ws0.get("frames_dropped_slow_client", 0),
                       "server_cpu": (time.process_time() - cpu0) / wall if wall > 0 else None})
            elif kind == "quit":
                reply({"bye": True})
                return


def reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# =============================================================================================
# Client side
# =============================================================================================

class Server:
    """The ``--serve`` subprocess and its command channel."""

    def __init__(self, proc: asyncio.subprocess.Process, info: dict[str, Any]) -> None:
        self.proc = proc
        self.base_url: str = info["base_url"]
        self.symbols: list[str] = info["symbols"]

    @classmethod
    async def start(cls, symbols: list[str], out_dir: Path) -> Server:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).resolve()), "--serve", "--symbols", ",".join(symbols),
            "--steps-per-bar", str(STEPS_PER_BAR), "--out", str(out_dir),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=str(ROOT))
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if not line:
            raise RuntimeError("the simulator process exited before it was ready")
        return cls(proc, json.loads(line))

    async def send(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if not line:
            raise RuntimeError(f"the simulator process died on {cmd}")
        return json.loads(line)

    async def close(self) -> None:
        try:
            await self.send(cmd="quit")
        except (RuntimeError, TimeoutError, ConnectionError):
            pass
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


def shipped_pairs() -> tuple[list[Any], Any]:
    from core.config import load_app_config, load_pairs_config

    app = load_app_config(ROOT / "config.json")
    pairs = [p for p in load_pairs_config(ROOT / "pairs_config.json", app.signal) if p.enabled]
    return pairs, app.signal


def exchange_config(base_url: str) -> Any:
    from core.config import ExchangeConfig

    return ExchangeConfig(id="binanceusdm", base_url=base_url, enable_rate_limit=False,
                          request_timeout_ms=10_000)


async def build_generators(hub: Any, pairs: list[Any], signal_cfg: Any) -> list[Any]:
    """Resolve legs, fetch history for every leg at once, build and warm up the generators."""
    from core.config import signal_params
    from signals.generator import SignalGenerator

    params = [signal_params(signal_cfg, p) for p in pairs]
    legs = [(hub.resolve_symbol(p.leg_a, pair_id=p.pair_id), hub.resolve_symbol(p.leg_b, pair_id=p.pair_id))
            for p in params]
    symbols = list(dict.fromkeys(s for pair in legs for s in pair))
    lookback = max(p.lookback_bars for p in params)
    history = await hub.fetch_history(symbols, bar_seconds=signal_cfg.bar_seconds, bars=lookback)
    generators = []
    for p, (a, b) in zip(params, legs):
        gen = SignalGenerator(p, symbol_a=a, symbol_b=b)
        gen.warm_up(history[a], history[b])
        generators.append(gen)
    return generators


class Mode:
    """One client under test: how to start it and how to read its counters."""

    name = ""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []  # (monotonic at processing, exchange ts)
        self.signals = 0

    def record(self, quote: Any, _now: Callable[[], float] = time.monotonic) -> None:
        self.samples.append((_now(), quote.ts_ms))

    async def start(self, base_url: str) -> None: ...
    async def stop(self) -> None: ...
    def frames(self) -> int: ...
    def processed(self) -> int: ...
    def coalesced(self) -> int | None: return None


class HubMode(Mode):
    def __init__(self, *, generators: bool) -> None:
        super().__init__()
        self.name = "hub_generators" if generators else "hub_noop"
        self.with_generators = generators
        self.hub: Any = None
        self.gens: list[Any] = []

    async def start(self, base_url: str) -> None:
        from signals.market_data import MarketDataHub

        pairs, signal_cfg = shipped_pairs()
        self.hub = hub = MarketDataHub(exchange_config=exchange_config(base_url),
                                       max_quote_age_ms=signal_cfg.max_quote_age_ms, seed=1)
        await hub.connect()
        self.gens = await build_generators(hub, pairs, signal_cfg)
        symbols = list(dict.fromkeys(s for g in self.gens for s in (g.symbol_a, g.symbol_b)))
        if self.with_generators:
            for gen in self.gens:
                consumer = self._decide(gen)
                hub.subscribe(gen.symbol_a, consumer)
                hub.subscribe(gen.symbol_b, consumer)
        for symbol in symbols:  # last: its timestamp is after every decision on the quote
            hub.subscribe(symbol, self.record)
        await hub.start()

    def _decide(self, gen: Any) -> Callable[[Any], None]:
        update, complete = gen.update, gen.complete

        def consume(quote: Any) -> None:
            signal = update(quote)
            if signal is not None:
                self.signals += 1
                complete(signal, False)  # execution is not part of this benchmark
        return consume

    async def stop(self) -> None:
        await self.hub.stop()

    def frames(self) -> int:
        return self.hub.exchange.frames_received if self.hub.exchange else 0

    def processed(self) -> int:
        return self.hub.counters.quotes_processed

    def coalesced(self) -> int | None:
        return self.hub.counters.quotes_coalesced


class BareMode(Mode):
    name = "bare_ccxt"

    def __init__(self) -> None:
        super().__init__()
        self.exchange: Any = None
        self.task: asyncio.Task[None] | None = None
        self.calls = 0

    async def start(self, base_url: str) -> None:
        import ccxt.pro as ccxtpro

        from core.venue import ccxt_client_config, point_at_local_exchange

        class Counting(ccxtpro.binanceusdm):  # type: ignore[misc, name-defined]
            frames_received = 0

            def handle_bids_asks(self, client: Any, message: Any) -> Any:
                self.frames_received += len(message) if isinstance(message, list) else 1
                return super().handle_bids_asks(client, message)

        self.exchange = Counting(ccxt_client_config(api_key=None, secret=None, timeout_ms=10_000,
                                                    enable_rate_limit=False))
        point_at_local_exchange(self.exchange, base_url=base_url)
        await self.exchange.load_markets()
        pairs, _ = shipped_pairs()
        legs = [s for p in pairs for s in (p.leg_a, p.leg_b)]
        symbols = list(dict.fromkeys(f"{s}:USDT" for s in legs))
        self.task = asyncio.create_task(self._loop(symbols), name="bench.bare_ccxt")

    async def _loop(self, symbols: list[str]) -> None:
        watch, now, append = self.exchange.watch_bids_asks, time.monotonic, self.samples.append
        while True:
            result = await watch(symbols)
            t = now()
            self.calls += 1
            for ticker in result.values():
                append((t, ticker["timestamp"]))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.exchange.close()

    def frames(self) -> int:
        return self.exchange.frames_received

    def processed(self) -> int:
        return self.calls


class RawMode(Mode):
    """The transport floor: aiohttp + orjson on the same stream, no ccxt (lag reference only)."""

    name = "raw_aiohttp"

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.session: Any = None
        self.ws: Any = None
        self.task: asyncio.Task[None] | None = None

    async def start(self, base_url: str) -> None:
        import aiohttp
        import orjson

        pairs, _ = shipped_pairs()
        streams = sorted({s.split("/")[0].lower() + "usdt@bookTicker" for p in pairs for s in (p.leg_a, p.leg_b)})
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(base_url.replace("http://", "ws://") + "/public/ws/0",
                                                compress=0)
        await self.ws.send_str(orjson.dumps({"method": "SUBSCRIBE", "params": streams, "id": 1}).decode())
        self.task = asyncio.create_task(self._loop(orjson.loads), name="bench.raw_aiohttp")

    async def _loop(self, loads: Callable[[Any], Any]) -> None:
        now, append = time.monotonic, self.samples.append
        async for message in self.ws:
            frame = loads(message.data)
            if "E" in frame:
                self.count += 1
                append((now(), frame["E"]))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.ws.close()
        await self.session.close()

    def frames(self) -> int:
        return self.count

    def processed(self) -> int:
        return self.count


async def wait_quiet(mode: Mode, *, limit_s: float = 15.0) -> None:
    """After a pause: wait until no frame arrives for 0.2 s (the pipe is empty)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = mode.frames()
        await asyncio.sleep(0.2)
        if mode.frames() == before:
            return


def pct(a: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(a, q)), 3) if a.size else None


async def run_step(server: Server, mode: Mode, qps: int, *, warm_s: float, measure_s: float,
                   tag: str) -> dict[str, Any]:
    """Offer ``qps`` for ``warm_s + measure_s``; measure the last ``measure_s``."""
    mode.samples.clear()
    anchor = await server.send(cmd="rate", qps=qps)
    await asyncio.sleep(warm_s)
    f0, p0, c0, s0 = mode.frames(), mode.processed(), mode.coalesced(), mode.signals
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(measure_s)
    f1, p1, c1, s1 = mode.frames(), mode.processed(), mode.coalesced(), mode.signals
    cpu1, t1 = time.process_time(), time.monotonic()
    srv = await server.send(cmd="pause", tag=tag)
    await wait_quiet(mode)
    wall = t1 - t0

    samples = np.array(mode.samples, dtype=np.float64).reshape(-1, 2)
    mode.samples.clear()
    batches = np.load(srv["batches"])
    Path(srv["batches"]).unlink(missing_ok=True)
    keep = (samples[:, 0] >= t0) & (samples[:, 0] <= t1) & (samples[:, 1] > anchor["anchor_ms"])
    t, ts = samples[keep, 0], samples[keep, 1]
    speed = anchor["speed"]
    sched = anchor["anchor_wall"] + (ts - anchor["anchor_ms"]) / (speed * 1000.0)
    lag_event = (t - sched) * 1000.0
    idx = np.searchsorted(batches[:, 2], ts, side="left") if batches.size else np.zeros(0, int)
    ok = idx < len(batches)
    lag_send = (t[ok] - batches[idx[ok], 0]) * 1000.0
    in_window = (batches[:, 0] >= t0) & (batches[:, 0] <= t1) if batches.size else np.zeros(0, bool)
    offered = float(batches[in_window, 3].sum()) / wall if batches.size else 0.0
    sim_delay = ((batches[:, 0] - (anchor["anchor_wall"] + (batches[:, 1] - anchor["anchor_ms"])
                                   / (speed * 1000.0))) * 1000.0) if batches.size else np.zeros(0)

    quarter = max(1, lag_event.size // 4)
    first_q = float(np.median(lag_event[:quarter])) if lag_event.size else 0.0
    last_q = float(np.median(lag_event[-quarter:])) if lag_event.size else 0.0
    slope = float(np.polyfit(t - t0, lag_event, 1)[0]) if lag_event.size > 10 else 0.0
    received = (f1 - f0) / wall
    growing = last_q - first_q > GROWTH_MS
    kept = (not growing and received >= MIN_DELIVERED * offered
            and srv["frames_dropped_slow_client"] == 0 and lag_event.size > 0)
    step = {
        "offered_qps": round(offered), "received_qps": round(received),
        "processed_qps": round((p1 - p0) / wall),
        "client_cpu": round((cpu1 - cpu0) / wall, 3),
        "server_cpu": round(srv["server_cpu"], 3) if srv["server_cpu"] is not None else None,
        "lag_event_ms": {"p50": pct(lag_event, 50), "p90": pct(lag_event, 90), "p99": pct(lag_event, 99),
                         "max": pct(lag_event, 100), "first_quarter_median": round(first_q, 3),
                         "last_quarter_median": round(last_q, 3), "slope_ms_per_s": round(slope, 3),
                         "samples": int(lag_event.size)},
        "lag_send_ms": {"p50": pct(lag_send, 50), "p99": pct(lag_send, 99), "max": pct(lag_send, 100)},
        "sim_batching_ms": {"p50": pct(sim_delay, 50), "p99": pct(sim_delay, 99)},
        "frames_dropped_by_server": srv["frames_dropped_slow_client"],
        "lag_growing": bool(growing), "kept": bool(kept),
    }
    if c0 is not None and c1 is not None:
        step["coalesced_fraction"] = round((c1 - c0) / (f1 - f0), 4) if f1 > f0 else 0.0
    if isinstance(mode, HubMode):
        step["signals_per_s"] = round((s1 - s0) / wall, 1) if mode.with_generators else None
    else:
        step["frames_per_watch_call"] = round((f1 - f0) / (p1 - p0), 2) if p1 > p0 else None
    return step


def max_kept(steps: list[dict[str, Any]], *, p99_ms: float | None = None) -> int:
    """The highest offered rate kept with every lower step kept too (and, if given, every
    step's event lag p99 within ``p99_ms``)."""
    best = 0
    for step in steps:
        p99 = step["lag_event_ms"]["p99"]
        if not step["kept"] or (p99_ms is not None and (p99 is None or p99 > p99_ms)):
            break
        best = step["rate_qps"]
    return best


async def ladder(server: Server, mode: Mode, rates: tuple[int, ...], *, warm_s: float,
                 measure_s: float, calibration_frames: int) -> dict[str, Any]:
    # The box may be shared: ccxt's cost per frame, measured right before, says how fast this
    # core was during the ladder.
    calibration = await ccxt_frame_cost(server.base_url, frames=calibration_frames)
    await mode.start(server.base_url)
    steps: list[dict[str, Any]] = []
    try:
        await asyncio.sleep(0.2)
        for rate in rates:
            # A step that fails is run once more (the box may be shared): the ladder stops at
            # the first rate that fails twice; both attempts are reported.
            attempts = []
            for attempt in range(2):
                step = {"rate_qps": rate} | await run_step(server, mode, rate, warm_s=warm_s,
                                                           measure_s=measure_s, tag=f"{mode.name}-{rate}")
                log(f"{mode.name} {rate}/s: received {step['received_qps']}/s processed "
                    f"{step['processed_qps']}/s cpu {step['client_cpu']:.2f} lag p50 "
                    f"{step['lag_event_ms']['p50']} p99 {step['lag_event_ms']['p99']} ms kept {step['kept']}")
                attempts.append(step)
                if step["kept"]:
                    break
            if len(attempts) > 1:
                attempts[-1]["failed_attempt"] = attempts[0]
            steps.append(attempts[-1])
            if not attempts[-1]["kept"]:
                break
    finally:
        await mode.stop()
    return {"max_rate_kept_qps": max_kept(steps),
            "max_rate_kept_with_p99_le_5ms_qps": max_kept(steps, p99_ms=5.0),
            "ccxt_us_per_frame_before": calibration["handle_message_us_per_frame"], "steps": steps}


async def latency_run(server: Server, *, measure_s: float) -> dict[str, Any]:
    """Hub + 10 generators at 2,000 quotes/s; then the same stream into a raw aiohttp reader."""
    result: dict[str, Any] = {"rate_qps": 2_000}
    for mode, seconds in ((HubMode(generators=True), measure_s), (RawMode(), min(measure_s, 3.0))):
        await mode.start(server.base_url)
        try:
            await asyncio.sleep(0.2)
            step = await run_step(server, mode, 2_000, warm_s=0.5, measure_s=seconds, tag=mode.name)
        finally:
            await mode.stop()
        if isinstance(mode, RawMode):
            result["transport_floor_raw_aiohttp"] = {k: step[k] for k in ("lag_event_ms", "lag_send_ms")}
        else:
            result |= step
    return result


async def trading_ready(server: Server, *, runs: int) -> dict[str, Any]:
    """Constructing the hub -> every window full; then -> every leg's first live quote."""
    from signals.market_data import MarketDataHub

    pairs, signal_cfg = shipped_pairs()
    await server.send(cmd="rate", qps=2_000)
    ready: list[float] = []
    first_quotes: list[float] = []
    cold = (0.0, 0.0)
    try:
        for run in range(runs + 1):
            t0 = time.perf_counter()
            hub = MarketDataHub(exchange_config=exchange_config(server.base_url),
                                max_quote_age_ms=signal_cfg.max_quote_age_ms, seed=1)
            try:
                await hub.connect()
                gens = await build_generators(hub, pairs, signal_cfg)
                if not all(g.snapshot().window_full for g in gens):
                    raise RuntimeError("a generator's window is not full after warm-up")
                t_ready = time.perf_counter() - t0
                seen: set[str] = set()
                symbols = {s for g in gens for s in (g.symbol_a, g.symbol_b)}
                for gen in gens:
                    hub.subscribe(gen.symbol_a, gen.update)
                    hub.subscribe(gen.symbol_b, gen.update)
                for symbol in symbols:
                    hub.subscribe(symbol, lambda q: seen.add(q.symbol))
                await hub.start()
                async with asyncio.timeout(10):
                    while seen != symbols:
                        await asyncio.sleep(0.001)
                t_first = time.perf_counter() - t0
            finally:
                await hub.stop()
            if run == 0:  # untimed: first ccxt instance, first numba kernel loads from the cache
                cold = (t_ready, t_first)
                continue
            ready.append(t_ready)
            first_quotes.append(t_first)
    finally:
        await server.send(cmd="pause", tag="ready")
    return {
        "median_s": round(statistics.median(ready), 4), "runs_s": [round(x, 4) for x in ready],
        "first_run_s": round(cold[0], 4),
        "until_every_leg_quoted_median_s": round(statistics.median(first_quotes), 4),
        "legs": len({s for p in pairs for s in (p.leg_a, p.leg_b)}), "pairs": len(pairs),
        "bars_per_leg": max(p.lookback_bars or signal_cfg.lookback_bars for p in pairs),
    }


async def ccxt_frame_cost(base_url: str, *, frames: int) -> dict[str, Any]:
    """ccxt's own cost per bookTicker frame, no network: ``handle_message`` on parsed frames.

    The baseline that explains the ceilings: one core cannot take more than ~1e6 / this many
    frames per second through ccxt, whatever the hub does.
    """
    import ccxt.pro as ccxtpro

    from core.venue import ccxt_client_config, point_at_local_exchange

    exchange = ccxtpro.binanceusdm(ccxt_client_config(api_key=None, secret=None, timeout_ms=10_000,
                                                      enable_rate_limit=False))
    point_at_local_exchange(exchange, base_url=base_url)
    try:
        await exchange.load_markets()
        pairs, _ = shipped_pairs()
        ids = sorted({s.split("/")[0] + "USDT" for p in pairs for s in (p.leg_a, p.leg_b)})
        client = exchange.client("ws://127.0.0.1:9/public/ws/calibration")  # never connected
        batch = [{"e": "bookTicker", "u": 3_000_000_000 + i, "s": ids[i % len(ids)], "b": "1.2345",
                  "B": "100.5", "a": "1.2346", "A": "80.1", "T": 1_688_774_150_000 + i,
                  "E": 1_688_774_150_000 + i} for i in range(frames)]
        best = float("inf")
        for _ in range(3):  # best of three: the box is shared, a neighbour's burst is noise
            t0 = time.perf_counter()
            for frame in batch:
                exchange.handle_message(client, frame)
            best = min(best, (time.perf_counter() - t0) / frames)
    finally:
        await exchange.close()
    return {"handle_message_us_per_frame": round(best * 1e6, 2),
            "implied_ceiling_qps": round(1 / best),
            "note": "JSON decoding (~1 us with orjson) and socket/asyncio costs come on top"}


def check_targets(result: dict[str, Any]) -> dict[str, Any]:
    rate = result["throughput"]["hub_generators"]["max_rate_kept_qps"]
    p99 = result["latency_at_2k"]["lag_event_ms"]["p99"]
    ready = result["trading_ready"]["median_s"]
    return {
        "throughput_ge_20k_qps": {"value": rate, "target": TARGETS["throughput_qps"],
                                  "ok": rate >= TARGETS["throughput_qps"]},
        "lag_p99_le_5ms_at_2k": {"value": p99, "target": TARGETS["lag_p99_ms_at_2k"],
                                 "ok": p99 is not None and p99 <= TARGETS["lag_p99_ms_at_2k"]},
        "trading_ready_le_3s": {"value": ready, "target": TARGETS["trading_ready_s"],
                                "ok": ready <= TARGETS["trading_ready_s"]},
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    import ccxt

    pairs, signal_cfg = shipped_pairs()
    symbols = sorted({s.split("/")[0] + "USDT" for p in pairs for s in (p.leg_a, p.leg_b)})
    rates = QUICK_RATES if args.quick else RATES
    warm_s, measure_s = (0.4, 1.5) if args.quick else (0.5, 4.0)
    load0 = os.getloadavg()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench_feed-") as tmp:
        server = await Server.start(symbols, Path(tmp))
        try:
            log(f"simulator up at {server.base_url} with {len(server.symbols)} symbols")
            calibration_frames = 5_000 if args.quick else 20_000
            calibration = await ccxt_frame_cost(server.base_url, frames=calibration_frames)
            log(f"ccxt handle_message: {calibration['handle_message_us_per_frame']} us per frame")
            ready = await trading_ready(server, runs=3 if args.quick else 5)
            log(f"trading-ready median {ready['median_s']} s")
            latency = await latency_run(server, measure_s=2.0 if args.quick else 8.0)
            log(f"lag at 2k/s: p50 {latency['lag_event_ms']['p50']} p99 {latency['lag_event_ms']['p99']} ms")
            throughput = {}
            for mode in (HubMode(generators=True), HubMode(generators=False), BareMode()):
                throughput[mode.name] = await ladder(server, mode, rates, warm_s=warm_s, measure_s=measure_s,
                                                     calibration_frames=calibration_frames)
        finally:
            await server.close()
    best = {k: v["max_rate_kept_qps"] for k, v in throughput.items()}
    result: dict[str, Any] = {
        "python": sys.version.split()[0], "ccxt": ccxt.__version__, "cpus": os.cpu_count(),
        "event_loop": "asyncio (default selector)",
        "setup": {"symbols": len(symbols), "pairs": len(pairs), "steps_per_bar": STEPS_PER_BAR,
                  "simulator": "separate process (bench_feed.py --serve), loopback WebSocket",
                  "client": "this process, one asyncio thread",
                  "measure_s_per_step": measure_s, "warm_s_per_step": warm_s,
                  "kept_rule": f"last-quarter median lag within {GROWTH_MS} ms of the first quarter's, "
                               f">= {MIN_DELIVERED:.0%} of offered received, no server drops"},
        "ccxt_frame_cost": calibration,
        "trading_ready": ready,
        "latency_at_2k": latency,
        "throughput": throughput,
        "ceilings_qps": best | {
            "hub_generators_vs_bare_ccxt": round(best["hub_generators"] / best["bare_ccxt"], 3)
            if best["bare_ccxt"] else None},
        "loadavg_start_end": [round(load0[0], 2), round(os.getloadavg()[0], 2)],
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    result["targets"] = check_targets(result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three rates, short steps (smoke run)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--symbols", default="", help=argparse.SUPPRESS)
    parser.add_argument("--steps-per-bar", type=int, default=STEPS_PER_BAR, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    if args.serve:
        asyncio.run(serve(tuple(args.symbols.split(",")), args.steps_per_bar, args.out))
        return
    print(json.dumps(asyncio.run(bench(args)), indent=2))


if __name__ == "__main__":
    main()
