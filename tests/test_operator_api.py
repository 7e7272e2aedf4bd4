"""Issue 12 item 4: the operator API, served by real uvicorn on 127.0.0.1 inside the bot's loop.

The whole bot is assembled as ``main.py`` does (tests/api_rig.py) against the in-process
simulator through real ccxt; every request goes over loopback HTTP with aiohttp. Each test is
bounded by ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.config import load_app_config
from core.types import PairState, SignalType
from execution.entry_gate import EntryGate
from execution.results import Reason
from tests.api_rig import IN_POSITION, TOKEN, TOKEN_ENV, ApiRig
from tests.conftest import clean_env, read_json, run_main, write_json

TEST_TIMEOUT_S = 45
GETS = ("/status", "/pairs", "/pairs/EOS_AXS", "/positions", "/trades", "/orders", "/equity", "/config", "/metrics")
POSTS = ("/pause", "/resume", "/pairs/EOS_AXS/enable", "/pairs/EOS_AXS/disable", "/pairs/EOS_AXS/close",
         "/pairs/EOS_AXS/resume", "/config/reload")


async def _json(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with session.request(method, url, **kwargs) as response:
        return response.status, await response.json(content_type=None)


def _operator_events(rig: ApiRig, kind: str) -> list[dict[str, Any]]:
    return rig.pipeline.journal.events(kind)


# ----------------------------------------------------------------------------- auth and errors


async def test_every_endpoint_but_health_wants_the_bearer_token(api_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await api_rig()
        async with aiohttp.ClientSession(rig.base_url) as http:
            assert await _json(http, "GET", "/health") == (200, {"ok": True})
            for method, paths in (("GET", GETS), ("POST", POSTS)):
                for path in paths:
                    for headers in ({}, rig.headers("wrong-token-0123456789"), {"Authorization": TOKEN}):
                        status, body = await _json(http, method, path, headers=headers)
                        assert status == 401, (method, path, headers, status, body)
                        assert body["error"] == "missing or wrong bearer token"
            async with http.get("/status") as response:
                assert response.headers["WWW-Authenticate"] == "Bearer"
            # nothing was done by the refused calls
            assert not rig.engine.entry_gate.paused and rig.engine.entry_gate.disabled == {}
            assert _operator_events(rig, "operator_pause") == []
            status, body = await _json(http, "GET", "/status", headers=rig.headers())
            assert status == 200 and body["mode"] == "LIVE" and body["pairs"] == 3


async def test_bad_input_is_a_4xx_with_a_json_error_and_an_unknown_pair_404(api_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await api_rig()
        auth = rig.headers()
        async with aiohttp.ClientSession(rig.base_url, headers=auth) as http:
            for method, path, kwargs in (("GET", "/trades?limit=abc", {}), ("GET", "/trades?limit=0", {}),
                                         ("GET", "/orders?limit=5000", {}), ("GET", "/orders?open=maybe", {}),
                                         ("POST", "/pause", {"data": "{not json", "headers": {
                                             "Content-Type": "application/json"}}),
                                         ("POST", "/pause", {"json": {"reason": 5}}),
                                         ("POST", "/pairs/EOS_AXS/disable", {"json": {"reasons": "x"}}),
                                         ("POST", "/pairs/EOS_AXS/close", {"json": {"reason": "x" * 201}}),
                                         ("POST", "/pairs/bad%20id/close", {})):
                status, body = await _json(http, method, path, **kwargs)
                assert status == 422, (path, status, body)
                assert body["status"] == 422 and body["error"].startswith("invalid request: ")
            for method, path in (("GET", "/pairs/NOPE"), ("POST", "/pairs/NOPE/close"), ("POST", "/pairs/NOPE/enable"),
                                 ("POST", "/pairs/NOPE/disable"), ("POST", "/pairs/NOPE/resume"),
                                 ("GET", "/trades?pair=NOPE"), ("GET", "/orders?pair=NOPE"), ("GET", "/no/such/route")):
                status, body = await _json(http, method, path)
                assert status == 404, (path, status, body)
                assert "error" in body
            status, body = await _json(http, "DELETE", "/pause")
            assert status == 405 and "error" in body
            assert not rig.engine.entry_gate.paused  # a refused /pause changed nothing


async def test_api_enabled_without_its_token_is_a_one_line_configuration_error(bot_dir: Path) -> None:
    config = read_json(bot_dir / "config.json")
    config["api"] = {"enabled": True, "token_env": TOKEN_ENV}
    write_json(bot_dir / "config.json", config)
    for env in (clean_env(), clean_env(**{TOKEN_ENV: ""}), clean_env(**{TOKEN_ENV: "short"})):
        proc = run_main(["demo", "--config", str(bot_dir / "config.json"), "--duration", "1"], cwd=bot_dir, env=env,
                        timeout=60)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and TOKEN_ENV in lines[0] and lines[0].startswith("config error:"), proc.stderr
        assert proc.stdout == ""  # nothing started: no banner
    assert not (bot_dir / "logs").exists()  # nothing written


def test_the_token_comes_from_the_environment_then_dotenv(tmp_path: Path) -> None:
    from app.operator_api.bearer import api_token
    from core.errors import ConfigurationError

    path = write_json(tmp_path / "config.json", {"api": {"enabled": True, "token_env": "MY_TOKEN"}})
    config = load_app_config(path)
    dotenv = tmp_path / ".env"
    dotenv.write_text("MY_TOKEN=from-dotenv-0123456789\n", encoding="utf-8")
    assert api_token(config, environ={"MY_TOKEN": "from-env-0123456789ab"}, dotenv_path=dotenv) == \
        "from-env-0123456789ab"
    assert api_token(config, environ={}, dotenv_path=dotenv) == "from-dotenv-0123456789"
    with pytest.raises(ConfigurationError, match="MY_TOKEN .api.token_env. set to"):
        api_token(config, environ={"MY_TOKEN": "  "}, dotenv_path=tmp_path / "none")
    assert api_token(load_app_config(write_json(path, {})), environ={}) is None  # off: no token needed


def test_a_busy_api_port_refuses_the_start_in_one_line_and_closes_everything(bot_dir: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        config = read_json(bot_dir / "config.json")
        config["api"] = {"enabled": True, "port": taken.getsockname()[1], "token_env": TOKEN_ENV}
        write_json(bot_dir / "config.json", config)
        proc = run_main(["demo", "--config", str(bot_dir / "config.json"), "--duration", "5"], cwd=bot_dir,
                        env=clean_env(**{TOKEN_ENV: TOKEN}), timeout=90)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "api.port" in last and "a free port on 127.0.0.1" in last, proc.stderr[-2000:]
    assert "FINAL STATISTICS" not in proc.stdout  # the bot never ran


def test_api_config_section_defaults_off_and_on_loopback(tmp_path: Path) -> None:
    path = write_json(tmp_path / "config.json", {})
    api = load_app_config(path).api
    assert (api.enabled, api.host, api.token_env) == (False, "127.0.0.1", "PAIRS_BOT_API_TOKEN")
    write_json(path, {"api": {"enabled": True, "tokn_env": "X"}})
    with pytest.raises(Exception, match="tokn_env"):
        load_app_config(path)


# ----------------------------------------------------------------------------- read endpoints


async def test_read_endpoints_show_pairs_positions_trades_orders_status_and_equity(api_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await api_rig()
        await rig.wait_state("EOS_AXS", IN_POSITION)
        async with aiohttp.ClientSession(rig.base_url, headers=rig.headers()) as http:
            status, pairs = await _json(http, "GET", "/pairs")
            assert status == 200
            rows = {r["pair_id"]: r for r in pairs["pairs"]}
            assert sorted(rows) == ["BTC_ETH", "DOT_ETH", "EOS_AXS"]
            eos = rows["EOS_AXS"]
            assert eos["state"] == rig.engine.pair_state("EOS_AXS").value and eos["state"] in ("LONG_SPREAD",
                                                                                               "SHORT_SPREAD")
            assert isinstance(eos["z"], float) and abs(eos["z"]) < 7.7 and eos["window_full"] is True
            position = rig.engine.positions["EOS_AXS"]
            assert (Decimal(eos["qty_a"]), Decimal(eos["qty_b"])) == (position.qty_a, position.qty_b) != (0, 0)
            status, one = await _json(http, "GET", "/pairs/EOS_AXS")
            assert status == 200 and {k: one[k] for k in ("pair_id", "state", "qty_a", "qty_b")} == \
                {k: eos[k] for k in ("pair_id", "state", "qty_a", "qty_b")}

            status, held = await _json(http, "GET", "/positions")
            mine = next(p for p in held["positions"] if p["pair_id"] == "EOS_AXS")
            assert Decimal(mine["qty_a"]) == rig.sim_qty(position.symbol_a)  # the API shows what the venue holds
            assert Decimal(mine["qty_b"]) == rig.sim_qty(position.symbol_b)
            assert mine["unrealized_usdt"] is not None and {"rows", "total"} <= held["pnl"].keys()

            status, orders = await _json(http, "GET", "/orders?limit=50&pair=EOS_AXS")
            assert status == 200 and orders["orders"]
            journal = {o.client_order_id: o for o in rig.pipeline.journal.orders_for_pair("EOS_AXS")}
            for order in orders["orders"]:
                assert order["status"] == journal[order["client_order_id"]].status.value
            assert {o["leg"] for o in orders["orders"] if o["purpose"] == "ENTRY"} == {"a", "b"}
            status, open_orders = await _json(http, "GET", "/orders?open=true")
            assert status == 200 and all(o["status"] not in ("FILLED", "CANCELED") for o in open_orders["orders"])

            status, trades = await _json(http, "GET", "/trades?pair=EOS_AXS")
            assert status == 200 and trades["trades"][0]["open"] is True  # the open round trip, newest first
            assert trades["trades"][0]["id"] == position.round_trip_id

            status, body = await _json(http, "GET", "/status")
            assert status == 200 and body["open_pairs"] >= 1 and body["entries_paused"] is False
            assert body["signals"] >= 1 and body["executed"] >= 1 and body["pair_states"].get(eos["state"], 0) >= 1
            status, equity = await _json(http, "GET", "/equity")
            assert status == 200 and equity["samples"] and Decimal(equity["now"]["equity_usdt"]) > 0


async def test_config_shows_the_settings_and_never_a_secret(api_rig, monkeypatch: pytest.MonkeyPatch) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await api_rig()
        # a config that carries keys the old way (config.json) must not leak them either
        leaky = rig.api.ctx.config.model_copy(update={"binance_api_key": "KEY-in-config-file-XYZ",
                                                      "binance_api_secret": "SECRET-in-config-file-XYZ"})
        monkeypatch.setattr(rig.api.ctx, "config", leaky)
        async with aiohttp.ClientSession(rig.base_url, headers=rig.headers()) as http:
            async with http.get("/config") as response:
                text = await response.text()
                assert response.status == 200
        body = json.loads(text)
        assert body["config"]["signal"]["entry_threshold"] == 0.3
        assert body["config"]["api"]["token_env"] == TOKEN_ENV and body["api_keys"] == "present"
        assert [p["pair_id"] for p in body["pairs"]] == ["EOS_AXS", "DOT_ETH", "BTC_ETH"]
        for secret in (TOKEN, rig.sim.api_key, rig.sim.api_secret, "KEY-in-config-file-XYZ",
                       "SECRET-in-config-file-XYZ"):
            assert secret not in text
        assert "binance_api_key" not in text and "binance_api_secret" not in text


async def test_metrics_parse_as_prometheus_text_with_the_named_metrics(api_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await api_rig()
        await rig.wait_state("EOS_AXS", IN_POSITION)
        await asyncio.sleep(0.8)  # two metric ticks: a quote rate
        async with aiohttp.ClientSession(rig.base_url, headers=rig.headers()) as http:
            async with http.get("/metrics") as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain; version=")
                text = await response.text()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        for name in ("pairs_bot_quotes", "pairs_bot_quotes_per_second", "pairs_bot_feed_lag_seconds",
                     "pairs_bot_quote_age_seconds", "pairs_bot_signals", "pairs_bot_signals_executed",
                     "pairs_bot_orders", "pairs_bot_protocol_events", "pairs_bot_refusals",
                     "pairs_bot_realized_pnl_usdt", "pairs_bot_unrealized_pnl_usdt", "pairs_bot_equity_usdt",
                     "pairs_bot_pair_z", "pairs_bot_pair_state", "pairs_bot_entries_paused"):
            assert name in families, name
        value = lambda name, **labels: next(s.value for s in families[name].samples  # noqa: E731
                                            if all(s.labels.get(k) == v for k, v in labels.items()))
        assert families["pairs_bot_signals"].type == "counter" and families["pairs_bot_pair_z"].type == "gauge"
        assert value("pairs_bot_quotes_per_second") > 0
        assert value("pairs_bot_signals") >= 1 and value("pairs_bot_signals_executed") >= 1
        assert value("pairs_bot_orders", status="FILLED") >= 2
        assert value("pairs_bot_protocol_events", counter="orders_sent") >= 2
        assert value("pairs_bot_pair_state", pair="EOS_AXS", state=rig.engine.pair_state("EOS_AXS").value) == 1
        assert {s.labels["symbol"] for s in families["pairs_bot_quote_age_seconds"].samples} == \
            set(rig.pipeline.router.symbols)
        assert value("pairs_bot_equity_usdt") > 0
        # a per-server registry: a second collector in this process does not clash with the first
        from app.operator_api.metrics import BotMetrics
        assert b"pairs_bot_quotes_total" in BotMetrics(rig.api.ctx).render()


# ----------------------------------------------------------------------------- actions


async def test_close_flattens_both_legs_on_the_exchange_through_the_engine(api_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await api_rig()
        await rig.wait_state("EOS_AXS", IN_POSITION)
        position = rig.engine.positions["EOS_AXS"]
        legs = (position.symbol_a, position.symbol_b)
        assert all(rig.sim_qty(s) != 0 for s in legs)
        naked: list[tuple[Decimal, Decimal]] = []

        async def audit() -> None:  # the moment, not only the end: never one leg without the other
            while True:
                qa, qb = rig.sim_qty(legs[0]), rig.sim_qty(legs[1])
                if (qa == 0) != (qb == 0) and "EOS_AXS" not in rig.engine.busy_pairs():
                    naked.append((qa, qb))
                await asyncio.sleep(0.005)

        auditor = asyncio.create_task(audit())
        try:
            async with aiohttp.ClientSession(rig.base_url, headers=rig.headers()) as http:
                # no re-entry afterwards (the pair's |z| >= 0.3 fires one at once): "stop it, flatten it"
                assert (await _json(http, "POST", "/pairs/EOS_AXS/disable"))[0] == 200
                status, body = await _json(http, "POST", "/pairs/EOS_AXS/close", json={"reason": "test close"},
                                           headers={"X-Operator": "alice"})
        finally:
            auditor.cancel()
            await asyncio.gather(auditor, return_exceptions=True)
        assert status == 200, body
        assert body["result"] == "closed" and body["executed"] is True and body["status"] == "EXECUTED"
        assert body["state"] == "FLAT" and rig.engine.pair_state("EOS_AXS") is PairState.FLAT
        assert [rig.sim_qty(s) for s in legs] == [0, 0]  # both legs flat on the exchange
        assert naked == []
        signal = rig.pipeline.journal.get_signal(body["signal_id"])
        assert signal is not None and signal.signal.signal_type is SignalType.FLATTEN  # through the engine
        trip = rig.pipeline.journal.get_round_trip(position.round_trip_id)
        assert trip is not None and not trip.is_open and trip.net_pnl is not None
        assert rig.engine.pair_state("EOS_AXS") is PairState.FLAT and [rig.sim_qty(s) for s in legs] == [0, 0]
        [event] = _operator_events(rig, "operator_close")
        assert event["pair_id"] == "EOS_AXS" and event["detail"]["who"] == "alice"
        assert event["detail"]["what"] == "close" and event["detail"]["result"]["executed"] is True


async def test_close_uses_the_engines_own_flatten_when_the_generator_does_not_hold_the_position(api_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await api_rig()
        await rig.wait_state("EOS_AXS", IN_POSITION)
        position = rig.engine.positions["EOS_AXS"]
        async with aiohttp.ClientSession(rig.base_url, headers=rig.headers()) as http:
            assert (await _json(http, "POST", "/pairs/EOS_AXS/disable"))[0] == 200
            rig.pipeline.router.generators["EOS_AXS"].set_state(PairState.FLAT)  # its view lost the position
            status, body = await _json(http, "POST", "/pairs/EOS_AXS/close")
        assert status == 200 and body["executed"] is True and body["status"] == "EXECUTED", body
        assert body["signal_id"].startswith("D")  # the engine's FLATTEN signal, through every protocol
        assert [rig.sim_qty(position.symbol_a), rig.sim_qty(position.symbol_b)] == [0, 0]
        assert rig.engine.pair_state("EOS_AXS") is PairState.FLAT


async def test_pause_refuses_entries_with_their_own_reason_and_lets_exits_through(api_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await api_rig()
        await rig.wait_state("EOS_AXS", IN_POSITION)
        async with aiohttp.ClientSession(rig.base_url, headers=rig.headers()) as http:
            status, body = await _json(http, "POST", "/pause", json={"reason": "maintenance"})
            assert status == 200 and body["paused"] is True
            assert rig.engine.entry_gate.paused_reason == "maintenance"
            # an exit while paused: the close (a FLATTEN) goes through every protocol and executes
            status, body = await _json(http, "POST", "/pairs/EOS_AXS/close")
            assert status == 200 and body["executed"] is True, body
            legs = rig.engine.positions["EOS_AXS"]
            assert (rig.sim_qty(legs.symbol_a), rig.sim_qty(legs.symbol_b)) == (0, 0)
            # the flat pair's generator fires an entry at once (|z| >= 0.3): refused, entries_paused, counted
            async with asyncio.timeout(15):
                while rig.engine.stats()["refused_by_reason"].get(Reason.ENTRIES_PAUSED.value, 0) == 0:
                    await asyncio.sleep(0.02)
                    assert rig.engine.pair_state("EOS_AXS") is PairState.FLAT  # while paused: no entry, ever
            status, metrics = await _json_text(http, "/metrics")
            assert 'pairs_bot_refusals_total{reason="entries_paused"}' in metrics
            assert "pairs_bot_entries_paused 1.0" in metrics
            status, body = await _json(http, "POST", "/resume")
            assert status == 200 and body["paused"] is False and body["changed"] is True
        await rig.wait_state("EOS_AXS", IN_POSITION)  # entries come back after resume
        kinds = [e["detail"]["what"] for e in rig.pipeline.journal.events() if e["kind"].startswith("operator_")]
        assert kinds == ["pause", "close", "resume"]


async def _json_text(http: aiohttp.ClientSession, path: str) -> tuple[int, str]:
    async with http.get(path) as response:
        return response.status, await response.text()


def test_the_entry_gate_holds_entries_only() -> None:
    gate = EntryGate()
    assert gate.refusal("A") is None
    gate.pause("ops")
    assert gate.refusal("A") == (Reason.ENTRIES_PAUSED, "ops")
    gate.resume()
    gate.disable("A", "flaky leg")
    assert gate.refusal("A") == (Reason.OPERATOR_DISABLED, "flaky leg") and gate.refusal("B") is None
    assert Reason.ENTRIES_PAUSED.is_persistent and Reason.OPERATOR_DISABLED.is_persistent


async def test_disable_and_enable_gate_one_pair(api_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await api_rig()
        await rig.wait_state("EOS_AXS", IN_POSITION)
        async with aiohttp.ClientSession(rig.base_url, headers=rig.headers()) as http:
            status, body = await _json(http, "POST", "/pairs/EOS_AXS/disable", json={"reason": "watch it"})
            assert status == 200 and body["entries_enabled"] is False
            status, body = await _json(http, "POST", "/pairs/EOS_AXS/close")
            assert status == 200 and body["executed"] is True  # a disabled pair still exits
            async with asyncio.timeout(15):
                while rig.engine.refusals_by_pair.get("EOS_AXS", 0) == 0 or \
                        Reason.OPERATOR_DISABLED.value not in rig.engine.stats()["refused_by_reason"]:
                    await asyncio.sleep(0.02)
                    assert rig.engine.pair_state("EOS_AXS") is PairState.FLAT
            status, pairs = await _json(http, "GET", "/pairs")
            row = next(r for r in pairs["pairs"] if r["pair_id"] == "EOS_AXS")
            assert row["operator_disabled"] == "watch it" and row["entries_enabled"] is False
            assert Reason.ENTRIES_PAUSED.value not in rig.engine.stats()["refused_by_reason"]
            status, body = await _json(http, "POST", "/pairs/EOS_AXS/enable")
            assert status == 200 and body["changed"] is True
        await rig.wait_state("EOS_AXS", IN_POSITION)
        assert [e["kind"] for e in rig.pipeline.journal.events() if e["kind"].startswith("operator_")] == \
            ["operator_disable", "operator_close", "operator_enable"]


async def test_resume_clears_a_halted_pair_as_main_resume_does(api_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await api_rig()
        await rig.wait_state("EOS_AXS", IN_POSITION)
        async with aiohttp.ClientSession(rig.base_url, headers=rig.headers()) as http:
            status, body = await _json(http, "POST", "/pairs/EOS_AXS/resume")
            assert status == 409 and "nothing to resume" in body["error"]  # in position: nothing to clear
            await _json(http, "POST", "/pause")  # no re-entry to race the assertions below
            status, body = await _json(http, "POST", "/pairs/EOS_AXS/close")
            assert status == 200 and body["executed"] is True
            from execution.lifecycle import PairEvent
            engine = rig.engine
            async with engine._lock:  # halt it as a failed rollback does, through the lifecycle table
                engine.lifecycle.apply("EOS_AXS", PairEvent.HALT, PairState.HALTED,
                                       reason="test: rollback failed")
            status, body = await _json(http, "POST", "/pairs/EOS_AXS/close")
            assert status == 409 and "HALTED" in body["error"]
            status, body = await _json(http, "POST", "/pairs/EOS_AXS/resume")
            assert status == 200 and body["state_before"] == "HALTED", body
            state = await rig.wait_state("EOS_AXS", (PairState.FLAT,))  # reconciled afresh: nothing held
            assert state is PairState.FLAT
        transitions = [e for e in rig.pipeline.journal.events("pair_transition") if e["pair_id"] == "EOS_AXS"]
        assert transitions[-2]["detail"]["event"] == "operator_resume"
        resumes = _operator_events(rig, "operator_resume_pair")
        assert [r["detail"]["result"].get("refused") is not None for r in resumes] == [True, False]


async def test_config_reload_calls_the_reloader_or_answers_503(api_rig, tmp_path: Path) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await api_rig()
        async with aiohttp.ClientSession(rig.base_url, headers=rig.headers()) as http:
            status, body = await _json(http, "POST", "/config/reload")
            assert status == 503 and "no reloader" in body["error"]
            path = write_json(tmp_path / "reload.json", {"signal": {"entry_threshold": 2.5}})
            reloader = _FileValidatingReloader(path)
            rig.api.ctx.reloader = reloader
            status, body = await _json(http, "POST", "/config/reload")
            assert (status, body["ok"]) == (200, True) and "entry_threshold 2.5" in body["message"]
            write_json(path, {"signal": {"entry_threshold": "2.5"}})
            status, body = await _json(http, "POST", "/config/reload")
            assert (status, body["ok"]) == (422, False) and "signal.entry_threshold" in body["message"]
        assert reloader.sources == ["api", "api"]
        assert [e["detail"]["result"].get("ok") for e in _operator_events(rig, "operator_reload")] == [None, True,
                                                                                                         False]


class _FileValidatingReloader:
    """A reloader as the hot-reload component would be seen by the API: it validates a real file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sources: list[str] = []

    async def reload(self, source: str) -> Any:
        from core.errors import ConfigurationError
        from types import SimpleNamespace

        self.sources.append(source)
        try:
            config = load_app_config(self.path)
        except ConfigurationError as exc:
            return SimpleNamespace(ok=False, message=str(exc))
        return SimpleNamespace(ok=True, message=f"valid: entry_threshold {config.signal.entry_threshold:g}")


# ----------------------------------------------------------------------------- /ws


async def test_ws_pushes_events_live_and_refuses_a_wrong_token(api_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await api_rig()
        ws_url = rig.base_url.replace("http://", "ws://") + "/ws"
        async with aiohttp.ClientSession() as http:
            for url, headers in ((ws_url, {}), (ws_url + "?token=nope", {}), (ws_url, rig.headers("nope"))):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await http.ws_connect(url, headers=headers)
                assert refused.value.status == 401
            seen: dict[str, list[dict[str, Any]]] = {}
            for url, headers in ((ws_url + f"?token={TOKEN}", {}), (ws_url, rig.headers())):
                async with http.ws_connect(url, headers=headers) as ws:
                    hello = await ws.receive_json()
                    assert hello["type"] == "hello" and hello["pairs"] == ["BTC_ETH", "DOT_ETH", "EOS_AXS"]
            async with http.ws_connect(ws_url + f"?token={TOKEN}") as ws:
                await ws.receive_json()  # hello
                await rig.wait_state("EOS_AXS", IN_POSITION)
                async with aiohttp.ClientSession(rig.base_url, headers=rig.headers()) as api:
                    status, body = await _json(api, "POST", "/pairs/EOS_AXS/close")
                    assert status == 200 and body["executed"] is True
                wanted = {"metric", "alert", "order", "position", "signal", "execution"}
                async with asyncio.timeout(15):
                    while not wanted <= seen.keys() or not any(
                            e["data"].get("alert") == "operator_close" for e in seen.get("alert", [])):
                        event = await ws.receive_json()
                        seen.setdefault(event["type"], []).append(event)
                assert rig.api.ws.clients == 1
        close = next(e for e in seen["alert"] if e["data"].get("alert") == "operator_close")
        assert close["pair_id"] == "EOS_AXS" and close["data"]["result"]["executed"] is True
        flatten = [e for e in seen["signal"] if e["data"]["signal_type"] == "FLATTEN"]
        assert flatten and flatten[0]["pair_id"] == "EOS_AXS"
        metric = seen["metric"][-1]["data"]
        assert {"quotes_per_second", "equity_usdt", "pairs"} <= metric.keys()
        assert {p["pair_id"] for p in metric["pairs"]} == {"BTC_ETH", "DOT_ETH", "EOS_AXS"}
        seqs = [e["seq"] for events in seen.values() for e in events]
        assert len(seqs) == len(set(seqs))  # every event once
        async with asyncio.timeout(5):
            while rig.api.ws.clients:  # the client left: its subscription is gone
                await asyncio.sleep(0.02)


async def test_stop_ends_ws_clients_and_frees_the_port(api_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await api_rig()
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(rig.base_url.replace("http://", "ws://") + f"/ws?token={TOKEN}")
            await ws.receive_json()
            subscribers = rig.pipeline.events.stats()["subscribers"]
            await rig.api.stop()  # the bot stops the API first
            async with asyncio.timeout(5):  # events sent before the stop may still be in flight
                message = await ws.receive()
                while message.type is aiohttp.WSMsgType.TEXT:
                    message = await ws.receive()
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            await ws.close()
            assert rig.pipeline.events.stats()["subscribers"] == subscribers - 1
            with pytest.raises(aiohttp.ClientConnectionError):
                await http.get(rig.base_url + "/health")


# ----------------------------------------------------------------------------- in the real process


@pytest.mark.parametrize("signum", [2, 15], ids=["SIGINT", "SIGTERM"])
def test_main_keeps_its_signals_the_api_serves_and_stops_with_the_bot(bot_dir: Path, spawn_main: Any,
                                                                      signum: int) -> None:
    """``python main.py demo`` with the API on: it serves inside the bot's process, and one Ctrl+C
    (or SIGTERM) is the bot's graceful stop (exit 0, final statistics), not uvicorn's."""
    import re
    import urllib.request

    config = read_json(bot_dir / "config.json")
    config["api"] = {"enabled": True, "port": 0, "token_env": TOKEN_ENV}
    write_json(bot_dir / "config.json", config)
    bot = spawn_main(["demo", "--config", str(bot_dir / "config.json"), "--speed", "300"], cwd=bot_dir,
                     env=clean_env(**{TOKEN_ENV: TOKEN}))
    bot.wait_for("operator API on http://127.0.0.1:", timeout=90)
    url = re.search(r"operator API on (http://127\.0\.0\.1:\d+)", bot.output).group(1)
    request = urllib.request.Request(url + "/status", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["mode"] == "DEMO"
    bot.send_signal(signum)
    assert bot.wait(timeout=30) == 0, bot.output[-3000:]
    assert "graceful shutdown complete" in bot.output and "FINAL STATISTICS" in bot.output
    assert "second SIG" not in bot.output and "forced" not in bot.output
    assert TOKEN not in bot.output  # the token is redacted from every log line
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/health", timeout=2)


async def test_config_reload_through_the_api_applies_a_valid_file_and_refuses_an_invalid_one(
        api_rig, tmp_path: Path) -> None:
    """POST /config/reload with the run's real hot-reload component (app/hot_reload.py): a
    changed threshold reaches the running generators; an invalid file is a 422 with the start's
    one-line error, and the running configuration stays as it was."""
    config_path, pairs_path = tmp_path / "config.json", tmp_path / "pairs_config.json"
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await api_rig(config_files=(config_path, pairs_path), metric_interval_seconds=0.3)
        assert rig.pipeline.reloader is not None
        generators = rig.pipeline.router.generators
        before = {p: g.params.entry_z for p, g in generators.items()}
        assert set(before.values()) == {0.3}
        raw = json.loads(config_path.read_text())
        raw["signal"]["entry_threshold"] = 0.4
        config_path.write_text(json.dumps(raw))
        async with aiohttp.ClientSession(rig.base_url, headers=rig.headers()) as http:
            status, body = await _json(http, "POST", "/config/reload")
            assert (status, body["ok"]) == (200, True), body
            assert {g.params.entry_z for g in generators.values()} == {0.4}
            raw["signal"]["entry_threshold"] = "high"
            config_path.write_text(json.dumps(raw))
            status, body = await _json(http, "POST", "/config/reload")
            assert (status, body["ok"]) == (422, False), body
            assert "signal.entry_threshold" in body["message"] and "\n" not in body["message"]
            assert {g.params.entry_z for g in generators.values()} == {0.4}  # untouched by the refusal
        results = [e["detail"]["result"].get("ok") for e in _operator_events(rig, "operator_reload")]
        assert results == [True, False]
