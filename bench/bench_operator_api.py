"""What the operator API costs the bot. Prints JSON.

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/bench_operator_api.py [--quick]``.

The bot is assembled as ``main.py`` does (LIVE mode against the in-process simulator, real
ccxt, three pairs), with the API on a free loopback port; measured in one run:

* ``publish_ns``: ``EventBus.publish`` per event with 0 subscribers (the baseline: what the
  order path pays with the API off) and with 10 subscribers (ten ``/ws`` clients), median of
  interleaved rounds. The ratio is what ten dashboards add to every journaled order change.
* ``request_ms``: loopback round trips of ``/health`` (the baseline: uvicorn + FastAPI alone),
  ``/status``, ``/pairs``, ``/metrics`` and ``/positions`` (p50, p99, over the same number of
  sequential requests while the bot trades): what a scrape or a dashboard refresh holds the
  bot's loop for, at most, since the views run in that loop.
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
from loguru import logger  # noqa: E402

from core.config import Secrets  # noqa: E402
from core.events import EventBus, EventKind  # noqa: E402
from core.launch import RunMode  # noqa: E402
from core.stats import SessionStats  # noqa: E402
from simulator.config import SimulatorConfig  # noqa: E402
from simulator.server import MarketData, SimulatorServer  # noqa: E402
from tests.api_rig import PAIRS, TOKEN, TOKEN_ENV, rig_config  # noqa: E402
from tests.engine_rig import REPLAY, SYMBOLS  # noqa: E402


def publish_ns(rounds: int, events: int) -> dict[str, Any]:
    data = {"client_order_id": "pb-x", "status": "FILLED", "qty": "1", "filled_qty": "1"}
    results: dict[int, list[float]] = {0: [], 10: []}
    for _ in range(rounds):
        for subscribers in (0, 10):
            bus = EventBus()
            subs = [bus.subscribe(maxsize=events + 1) for _ in range(subscribers)]
            start = time.perf_counter_ns()
            for _ in range(events):
                bus.publish(EventKind.ORDER, data, pair_id="EOS_AXS")
            results[subscribers].append((time.perf_counter_ns() - start) / events)
            for sub in subs:
                sub.close()
    off, ten = statistics.median(results[0]), statistics.median(results[10])
    return {"no_subscriber": round(off, 1), "ten_subscribers": round(ten, 1), "ratio": round(ten / off, 2)}


async def request_ms(n: int) -> dict[str, Any]:
    from app.assemble import assemble

    os.environ[TOKEN_ENV] = TOKEN
    sim = SimulatorServer(SimulatorConfig(symbols=SYMBOLS, port=0, replay=REPLAY),
                          data=MarketData.load(SimulatorConfig(symbols=SYMBOLS)))
    await sim.start()
    started: list[Any] = []
    pipeline = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            pipeline = await assemble(config=rig_config(sim.base_url), pairs=PAIRS, mode=RunMode.LIVE,
                                      secrets=Secrets(sim.api_key, sim.api_secret, "bench"),
                                      stats=SessionStats(mode="LIVE"), storage_dir=Path(tmp), started=started,
                                      demo_speed=600.0, adopt=False)
            for component in pipeline.components:
                started.append(component)
                await component.start()
            api = pipeline.components[-1]
            await asyncio.sleep(2.0)  # the pairs enter: the views have positions and orders to show
            out: dict[str, Any] = {}
            async with aiohttp.ClientSession(api.base_url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
                for path in ("/health", "/status", "/pairs", "/metrics", "/positions"):
                    times = []
                    for _ in range(n):
                        start = time.perf_counter()
                        async with http.get(path) as response:
                            await response.read()
                            if response.status != 200:
                                raise RuntimeError(f"{path}: HTTP {response.status}")
                        times.append((time.perf_counter() - start) * 1000)
                    times.sort()
                    out[path] = {"p50": round(times[len(times) // 2], 3), "p99": round(times[int(len(times) * 0.99)], 3)}
            base = out["/health"]["p50"]
            for path in out:
                out[path]["p50_vs_health"] = round(out[path]["p50"] / base, 2)
            out["quotes_processed_meanwhile"] = pipeline.hub.counters.quotes_processed
            return out
    finally:
        for component in reversed(started):
            await component.stop()
        if pipeline is not None and pipeline.journal is not None:
            pipeline.journal.close()
        await sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and requests")
    args = parser.parse_args()
    logger.remove()
    rounds, events, requests = (3, 2_000, 50) if args.quick else (9, 20_000, 300)
    result = {"publish_ns": publish_ns(rounds, events), "request_ms": asyncio.run(request_ms(requests)),
              "rounds": rounds, "events_per_round": events, "requests_per_path": requests}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
