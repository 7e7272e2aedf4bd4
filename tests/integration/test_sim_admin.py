"""Admin endpoints, state persistence and the standalone CLI of the simulator."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import ccxt.async_support as ccxt_async
import pytest

from simulator.__main__ import build_parser, config_from_args, parse_faults
from simulator.config import SimulatorConfig
from simulator.server import MarketData, SimulatorServer
from tests.sim_helpers import TEST_REPLAY, local_client

PROJECT = Path(__file__).resolve().parents[2]


async def test_admin_endpoints_drive_and_inspect_the_venue(sim, rest) -> None:
    base = sim.base_url
    async with asyncio.timeout(10), aiohttp.ClientSession() as http:
        assert await _get(http, f"{base}/sim/orders") == []  # nothing was ever sent
        await rest.create_order("ETH/USDT:USDT", "market", "buy", 0.01,
                                params={"newClientOrderId": "admin-1"})
        orders = await _get(http, f"{base}/sim/orders?clientOrderId=admin-1")
        assert [(o["clientOrderId"], o["account"], o["status"]) for o in orders] == [
            ("admin-1", "default", "FILLED")]
        positions = await _get(http, f"{base}/sim/positions")
        assert positions["default"]["positions"]["ETHUSDT"]["amount"] == "0.01"
        faults = await _post(http, f"{base}/sim/faults", {"latency_ms": 5, "seed": 4})
        assert faults["latency_ms"] == 5 and sim.faults.config.seed == 4
        async with http.post(f"{base}/sim/faults", json={"bogus": 1}) as response:
            assert response.status == 400 and "bogus" in (await response.json())["error"]
        assert (await _post(http, f"{base}/sim/faults", {"reset": True}))["latency_ms"] == 0
        await _post(http, f"{base}/sim/faults/http-burst", {"status": 503, "count": 1})
        async with http.get(f"{base}/fapi/v1/ping") as response:
            assert response.status == 503
        paused = await _post(http, f"{base}/sim/replay", {"paused": True})
        await asyncio.sleep(0.05)
        assert sim.replay.now_ms == paused["replay_ms"]  # the market stands still
        await _post(http, f"{base}/sim/replay", {"paused": False, "speed": 50})
        assert sim.clock.speed == 50
        assert (await _post(http, f"{base}/sim/ws/drop", {}))["dropped"] == 0
        stats = await _get(http, f"{base}/sim/stats")
        assert stats["orders"] == 1 and stats["faults_injected"] == {"http_503": 1}
        await _post(http, f"{base}/sim/reset", {})
        assert await _get(http, f"{base}/sim/orders") == []
        assert (await _get(http, f"{base}/sim/health"))["status"] == "ok"
        async with http.get(f"{base}/fapi/v1/nope") as response:
            assert response.status == 404 and (await response.json())["code"] == -5000


async def test_state_file_survives_a_simulator_restart(tmp_path: Path,
                                                       market_data: MarketData) -> None:
    config = SimulatorConfig(replay=TEST_REPLAY, state_file=tmp_path / "sim-state.json")
    async with asyncio.timeout(15):
        async with SimulatorServer(config, data=market_data) as first:
            client = local_client(ccxt_async.binanceusdm, first)
            try:
                await client.create_order("BTC/USDT:USDT", "market", "buy", 0.002,
                                          params={"newClientOrderId": "keep-me"})
                stopped_at = first.replay.now_ms
            finally:
                await client.close()
        assert config.state_file is not None and config.state_file.exists()
        async with SimulatorServer(config, data=market_data) as second:
            assert second.replay.now_ms >= stopped_at
            client = local_client(ccxt_async.binanceusdm, second)
            try:
                order = await client.fetch_order(None, "BTC/USDT:USDT",
                                                 params={"origClientOrderId": "keep-me"})
                positions = await client.fetch_positions(["BTC/USDT:USDT"])
                fresh = await client.create_order("BTC/USDT:USDT", "market", "sell", 0.002,
                                                  params={"reduceOnly": True})
            finally:
                await client.close()
    assert order["filled"] == 0.002 and positions[0]["contracts"] == 0.002
    assert int(fresh["id"]) == int(order["id"]) + 1  # order ids continue, never reused


def test_cli_builds_the_config_and_rejects_bad_faults() -> None:
    args = build_parser().parse_args(["--port", "0", "--quotes-per-second", "20000",
                                      "--symbols", "btcusdt,ethusdt", "--faults",
                                      "latency_ms=20,malformed_kinds=nan_price+stale"])
    config = config_from_args(args)
    assert config.symbols == ("BTCUSDT", "ETHUSDT")
    assert config.replay.speed == pytest.approx(20000 * 300 / (2 * 60))
    assert config.faults.latency_ms == 20
    assert config.faults.malformed_kinds == ("nan_price", "stale")
    assert config.rate_limits.enabled  # Binance's limits unless asked otherwise
    assert not config_from_args(build_parser().parse_args(["--no-rate-limits"])).rate_limits.enabled
    assert parse_faults('{"reject_probability": 0.5}').reject_probability == 0.5
    with pytest.raises(ValueError, match="unknown fault"):
        parse_faults("nope=1")


def test_cli_help_and_usage_errors() -> None:
    help_text = _run(["--help"]).stdout
    for needle in ("--speed", "--faults", "--state-file", "/sim/orders", "quote rate"):
        assert needle in help_text
    bad = _run(["--faults", "reject_probability=7"])
    assert bad.returncode == 2 and "reject_probability" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_standalone_server_runs_and_stops_on_sigint() -> None:
    with subprocess.Popen([sys.executable, "-m", "simulator", "--port", "0", "--symbols",
                           "BTCUSDT,ETHUSDT", "--log-level", "WARNING"], cwd=PROJECT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            match = re.search(r"REST (http://127\.0\.0\.1:\d+)", line)
            assert match, line
            health = asyncio.run(_health(match.group(1)))
            assert health["status"] == "ok" and health["symbols"] == 2
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


async def _health(base: str) -> dict:
    async with asyncio.timeout(5), aiohttp.ClientSession() as http:
        return await _get(http, f"{base}/sim/health")


async def _get(http: aiohttp.ClientSession, url: str):  # type: ignore[no-untyped-def]
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def _post(http: aiohttp.ClientSession, url: str, body: dict):  # type: ignore[no-untyped-def]
    async with http.post(url, json=body) as response:
        assert response.status == 200, await response.text()
        return await response.json()


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simulator", *args], cwd=PROJECT,
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": str(PROJECT)})

