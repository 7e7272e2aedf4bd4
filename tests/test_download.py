"""``python main.py download`` against the simulator through real ccxt (README, "Market data for research").

The oracle is the simulator's own klines (``MarketReplay.klines``), closed ones only, as text.
The market is paused, so the newest candle stays open and the history stays put: 3,500 closed
5-minute candles per symbol, four pages of 1,000. Requests are counted on the simulator side
(``SimulatorServer.request_log``), and every file is checked while the download runs, not only
at its end: always a gapless prefix of the oracle.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from rich.console import Console

import main as main_module
from app.download import DownloadRequest, run_download
from core.config import ExchangeConfig
from core.errors import UsageError
from research import store
from research.download import SymbolProgress, SymbolResult
from simulator.config import ReplayConfig, SimulatorConfig
from simulator.rate_limits import RateLimitConfig
from simulator.server import MarketData, SimulatorServer
from tests.conftest import PYTHON, PROJECT_DIR, clean_env, write_json

SYMBOLS = ("BTCUSDT", "ETHUSDT", "EOSUSDT")
CLOSED = 3500  # closed candles before the paused replay time
BAR_MS = 300_000
KLINES = "/fapi/v1/klines"
BUNDLED = PROJECT_DIR / "data" / "binance-usdm-perp-5m-2023-07"


@pytest.fixture(scope="module")
def market_data() -> MarketData:
    return MarketData.load(SimulatorConfig(symbols=SYMBOLS))


@pytest.fixture
async def sim(market_data: MarketData) -> AsyncIterator[SimulatorServer]:
    config = SimulatorConfig(symbols=SYMBOLS, port=0,
                             replay=ReplayConfig(speed=1.0, warmup_bars=CLOSED, steps_per_bar=60, seed=11))
    async with SimulatorServer(config, data=market_data) as server:
        server.pause()  # the open candle stays open, the closed ones stay put
        yield server


def exchange_of(sim: SimulatorServer, **changes: Any) -> ExchangeConfig:
    return ExchangeConfig(base_url=sim.base_url, request_timeout_ms=3000, **changes)


def oracle(sim: SimulatorServer, symbol: str) -> list[store.Row]:
    """The simulator's closed 5-minute klines of ``symbol``, as the text it serves."""
    rows = sim.replay.klines(symbol, BAR_MS, start_ms=0, limit=10**9)
    now = sim.replay.now_ms
    return [tuple(str(x) for x in r[:6]) for r in rows if int(r[0]) + BAR_MS <= now]  # type: ignore[misc]


def kline_requests(sim: SimulatorServer, symbol: str) -> list[Any]:
    return [r for r in sim.request_log if r.path == KLINES and r.query.get("symbol") == symbol]


def first_open(sim: SimulatorServer, symbol: str) -> int:
    return int(oracle(sim, symbol)[0][0])


class PrefixWatch:
    """Called on every page: each file on disk is, at that moment, a gapless prefix of the oracle."""

    def __init__(self, sim: SimulatorServer, folder: Path) -> None:
        self.expected = {s: oracle(sim, s) for s in SYMBOLS}
        self.folder = folder
        self.calls = self.checks = 0

    def __call__(self, progress: SymbolProgress) -> None:
        self.calls += 1
        path = store.ohlcv_path(self.folder, progress.symbol, "5m")
        if path.exists():
            rows = store.read_rows(path)
            assert store.check_rows(rows, BAR_MS, where=str(path)) == []
            start = self.expected[progress.symbol].index(rows[0])
            assert rows == self.expected[progress.symbol][start:start + len(rows)]
            self.checks += 1


async def download(sim: SimulatorServer, folder: Path, *symbols: str, on_page: Any = None,
                   checkpoint_seconds: float = 0.0, throttle: bool = True, **request: Any) -> list[SymbolResult | str]:
    req = DownloadRequest(symbols=symbols, timeframe="5m", out_dir=folder, checkpoint_seconds=checkpoint_seconds,
                          **request)
    async with asyncio.timeout(60):
        return await run_download(req, exchange=exchange_of(sim, enable_rate_limit=throttle), data_root=folder / "unused",
                                  console=Console(file=open(os.devnull, "w")), on_page=on_page)


async def test_a_download_pages_and_stores_exactly_the_simulators_closed_klines(sim: SimulatorServer,
                                                                               tmp_path: Path) -> None:
    watch = PrefixWatch(sim, tmp_path)
    since = first_open(sim, "BTCUSDT")
    results = await download(sim, tmp_path, "BTCUSDT", "ETH/USDT:USDT", since_ms=since, on_page=watch)
    assert [r.symbol for r in results if isinstance(r, SymbolResult)] == ["BTCUSDT", "ETHUSDT"]
    # called on every page of both symbols (and at each start); the checkpoint writer runs behind,
    # so a file is seen at some of them, always as a prefix
    assert watch.calls == 10 and watch.checks >= 3
    for symbol in ("BTCUSDT", "ETHUSDT"):
        expected = oracle(sim, symbol)
        assert len(expected) == CLOSED
        assert store.read_rows(store.ohlcv_path(tmp_path, symbol, "5m")) == expected  # text, exactly
        pages = kline_requests(sim, symbol)
        assert len(pages) == 4 and all(p.query["limit"] == "1000" for p in pages)
        assert [int(p.query["startTime"]) for p in pages] == [int(expected[i][0]) for i in (0, 1000, 2000, 3000)]
    # the candle still open at the replay time is served by the venue, and never stored
    open_candle = sim.replay.klines("BTCUSDT", BAR_MS, limit=1)[-1]
    assert int(open_candle[0]) + BAR_MS > sim.replay.now_ms
    assert int(store.read_rows(store.ohlcv_path(tmp_path, "BTCUSDT", "5m"))[-1][0]) < int(open_candle[0])
    provenance = (tmp_path / "provenance.json").read_text()
    assert '"BTCUSDT"' in provenance and '"candles": 3500' in provenance


async def test_the_stored_files_load_with_the_shared_loader_as_the_bundled_data_do(sim: SimulatorServer,
                                                                                  tmp_path: Path) -> None:
    await download(sim, tmp_path, "EOSUSDT", since_ms=first_open(sim, "EOSUSDT"))
    downloaded = store.load_ohlcv(tmp_path, "EOSUSDT", "5m")
    bundled = store.load_ohlcv(BUNDLED, "EOSUSDT", "5m")
    assert list(downloaded.columns) == list(bundled.columns) == list(store.COLUMNS)
    assert list(downloaded.dtypes) == list(bundled.dtypes)
    assert store.list_symbols(tmp_path, "5m") == ["EOSUSDT"]  # provenance.json is not a symbol
    assert len(store.list_symbols(BUNDLED, "5m")) == 20
    expected = oracle(sim, "EOSUSDT")
    assert downloaded["timestamp_ms"].tolist() == [int(r[0]) for r in expected]
    assert downloaded["close"].tolist() == [float(r[4]) for r in expected]
    # both have the same header and the same layout on disk; the bundled set has no gap (data/README.md)
    assert store.check_rows(store.read_rows(store.ohlcv_path(BUNDLED, "EOSUSDT", "5m")), BAR_MS, where="bundled") == []


async def test_ctrl_c_keeps_what_was_fetched_and_a_rerun_fetches_only_the_tail(sim: SimulatorServer,
                                                                             tmp_path: Path) -> None:
    since = first_open(sim, "BTCUSDT")
    whole = tmp_path / "whole"
    await download(sim, whole, "BTCUSDT", since_ms=since)
    sim.request_log.clear()

    cut = tmp_path / "cut"
    task: asyncio.Task[Any] | None = None

    def interrupt_after_two_pages(progress: SymbolProgress) -> None:
        if progress.fetched >= 2000 and task is not None:
            task.cancel()  # what Ctrl+C does to the running download

    # no checkpoint would fall due within the run: only the interruption's own write saves the pages
    task = asyncio.create_task(download(sim, cut, "BTCUSDT", since_ms=since, on_page=interrupt_after_two_pages,
                                        checkpoint_seconds=3600))
    with pytest.raises(asyncio.CancelledError):
        await task
    kept = store.read_rows(store.ohlcv_path(cut, "BTCUSDT", "5m"))
    assert kept == oracle(sim, "BTCUSDT")[:2000]

    sim.request_log.clear()
    results = await download(sim, cut, "BTCUSDT", since_ms=since)
    pages = kline_requests(sim, "BTCUSDT")
    assert [int(p.query["startTime"]) for p in pages] == [int(kept[-1][0]) + BAR_MS, int(kept[-1][0]) + 1001 * BAR_MS]
    assert isinstance(results[0], SymbolResult) and results[0].fetched == 1500
    assert (store.ohlcv_path(cut, "BTCUSDT", "5m").read_bytes()
            == store.ohlcv_path(whole, "BTCUSDT", "5m").read_bytes())


async def test_an_earlier_start_fills_the_head_backward_and_stops_at_the_listing(sim: SimulatorServer,
                                                                                tmp_path: Path) -> None:
    """A file of the last day, then a run from ten days before the symbol's first candle: the
    head is fetched in windows of 1000 ending at the stored first candle (so every checkpoint is
    contiguous), one empty window and one 1-row probe find the listing, and the tail is unchanged."""
    expected = oracle(sim, "ETHUSDT")
    watch = PrefixWatch(sim, tmp_path)
    await download(sim, tmp_path, "ETHUSDT", days=1.0)
    assert store.read_rows(store.ohlcv_path(tmp_path, "ETHUSDT", "5m")) == expected[-288:]
    sim.request_log.clear()
    await download(sim, tmp_path, "ETHUSDT", since_ms=int(expected[0][0]) - 10 * 86_400_000, on_page=watch)
    assert store.read_rows(store.ohlcv_path(tmp_path, "ETHUSDT", "5m")) == expected
    pages = kline_requests(sim, "ETHUSDT")
    first_stored = int(expected[-288][0])
    ends = [int(p.query["endTime"]) for p in pages]
    assert ends[:4] == [first_stored - BAR_MS * (1 + 1000 * k) for k in range(4)]  # 3212 older candles
    assert [p.query["limit"] for p in pages[-2:]] == ["1000", "1"]  # the empty window, the probe
    assert len(pages) == 6 and watch.calls == 5


async def test_a_killed_download_leaves_a_valid_file_and_the_rerun_equals_one_uninterrupted_run(
        sim: SimulatorServer, tmp_path: Path) -> None:
    """SIGKILL mid-run (no cleanup at all): the file is the last atomic checkpoint."""
    since = first_open(sim, "BTCUSDT")
    whole = tmp_path / "whole"
    await download(sim, whole, "BTCUSDT", since_ms=since)
    config = write_json(tmp_path / "config.json", {"exchange": {"base_url": sim.base_url}})
    folder = tmp_path / "killed"
    path = store.ohlcv_path(folder, "BTCUSDT", "5m")
    sim.set_faults(latency_ms=400)  # slow pages, so the kill lands between them
    proc = await asyncio.create_subprocess_exec(
        PYTHON, str(PROJECT_DIR / "main.py"), "download", "--config", str(config), "--symbols", "BTCUSDT",
        "--since", str(since), "--out", str(folder), "--checkpoint-seconds", "0",
        env=clean_env(), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        async with asyncio.timeout(60):
            while not path.exists():
                await asyncio.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    kept = store.read_rows(path)
    assert 1000 <= len(kept) < CLOSED and kept == oracle(sim, "BTCUSDT")[:len(kept)]
    sim.set_faults(latency_ms=0)
    sim.request_log.clear()
    await download(sim, folder, "BTCUSDT", since_ms=since)
    assert int(kline_requests(sim, "BTCUSDT")[0].query["startTime"]) == int(kept[-1][0]) + BAR_MS
    assert path.read_bytes() == store.ohlcv_path(whole, "BTCUSDT", "5m").read_bytes()


@pytest.mark.parametrize("status", [429, 418])
async def test_a_429_during_a_download_is_waited_out_for_its_retry_after_and_the_result_is_complete(
        sim: SimulatorServer, tmp_path: Path, status: int) -> None:
    injected = {"done": False}

    def inject_after_the_first_page(progress: SymbolProgress) -> None:
        if progress.fetched == 1000 and not injected["done"]:
            sim.inject_http_errors(status, 1)  # the next request is refused, Retry-After: 1
            injected["done"] = True

    results = await download(sim, tmp_path, "BTCUSDT", since_ms=first_open(sim, "BTCUSDT"),
                             on_page=inject_after_the_first_page)
    log = list(sim.request_log)
    refused = [i for i, r in enumerate(log) if r.status == status]
    assert len(refused) == 1
    after = log[refused[0] + 1]
    assert after.path == KLINES and after.status == 200
    assert after.wall_ms - log[refused[0]].wall_ms >= 1000  # nothing sent before Retry-After passed
    assert isinstance(results[0], SymbolResult) and results[0].retries == 1
    assert store.read_rows(store.ohlcv_path(tmp_path, "BTCUSDT", "5m")) == oracle(sim, "BTCUSDT")


async def test_the_venues_own_weight_limit_is_kept_without_one_early_request(sim: SimulatorServer,
                                                                            tmp_path: Path) -> None:
    """The limiter's 429s carry Retry-After to the window's end; a request before it would be a
    violation (and on Binance, a 418 ban). One page (weight 5) per second is allowed, and without
    ccxt's throttle the pages follow each other within milliseconds: the limit is hit."""
    def tighten(progress: SymbolProgress) -> None:  # after exchangeInfo: the client learnt 2,400/min
        sim.set_rate_limits(RateLimitConfig(weight_per_window=5, weight_window_ms=1000))

    results = await download(sim, tmp_path, "BTCUSDT", since_ms=first_open(sim, "BTCUSDT"), on_page=tighten,
                             throttle=False)
    assert sim.rate_limiter.answered[429] >= 1
    assert sim.rate_limiter.violations == [] and sim.rate_limiter.answered[418] == 0
    assert isinstance(results[0], SymbolResult)
    assert store.read_rows(store.ohlcv_path(tmp_path, "BTCUSDT", "5m")) == oracle(sim, "BTCUSDT")


async def test_a_hole_in_the_stored_file_is_reported_and_kept_not_filled(sim: SimulatorServer,
                                                                         tmp_path: Path) -> None:
    """Holes are the exchange's (maintenance): a re-run extends the tail and reports the hole."""
    expected = oracle(sim, "BTCUSDT")
    store.write_rows(tmp_path, "BTCUSDT", "5m", expected[:500] + expected[510:1000])
    results = await download(sim, tmp_path, "BTCUSDT", since_ms=int(expected[0][0]))
    result = results[0]
    assert isinstance(result, SymbolResult) and result.fetched == CLOSED - 1000
    assert result.gaps == [store.Gap(int(expected[499][0]), int(expected[510][0]), 10)]
    assert '"gap_count": 1' in (tmp_path / "provenance.json").read_text()
    assert store.read_rows(store.ohlcv_path(tmp_path, "BTCUSDT", "5m")) == expected[:500] + expected[510:]


async def test_a_folder_of_another_venues_candles_is_never_extended(sim: SimulatorServer, tmp_path: Path) -> None:
    write_json(tmp_path / "provenance.json", {"venue": "production", "symbols": {}})
    with pytest.raises(UsageError, match="holds candles from production"):
        await download(sim, tmp_path, "BTCUSDT", days=1.0)
    assert kline_requests(sim, "BTCUSDT") == [] and store.list_symbols(tmp_path) == []


async def test_top_volume_takes_the_usdt_perpetuals_with_the_highest_24h_quote_volume(sim: SimulatorServer,
                                                                                     tmp_path: Path) -> None:
    volumes = {s: float(sim.replay.ticker_24h(s)["quoteVolume"]) for s in SYMBOLS}  # type: ignore[arg-type]
    top2 = sorted(volumes, key=lambda s: -volumes[s])[:2]
    await download(sim, tmp_path, top_volume=2, days=1.0)
    assert store.list_symbols(tmp_path, "5m") == sorted(top2)
    assert len(store.read_rows(store.ohlcv_path(tmp_path, top2[0], "5m"))) == 288  # one day of 5m candles


async def _main(args: list[str], cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(PYTHON, str(PROJECT_DIR / "main.py"), "download", *args, cwd=cwd,
                                                env=clean_env(), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(60):
        _, err = await proc.communicate()
    return int(proc.returncode or 0), err.decode()


@pytest.mark.parametrize("args, says", [
    (["--symbols", "NOPEUSDT", "BTCUSDT"], "unknown symbol(s) NOPEUSDT"),
    (["--symbols", "BTCUSDT", "--since", "2024-01-01"], "after the exchange's newest closed 5m candle"),
], ids=["unknown-symbol", "since-after-the-venues-last-candle"])
async def test_bad_input_the_exchange_decides_is_one_line_exit_2_and_nothing_written(
        sim: SimulatorServer, tmp_path: Path, args: list[str], says: str) -> None:
    config = write_json(tmp_path / "config.json", {"exchange": {"base_url": sim.base_url}})
    out = tmp_path / "out"
    code, err = await _main(["--config", str(config), "--out", str(out), *args], tmp_path)
    assert code == 2
    assert err.strip().count("\n") == 0 and says in err, err
    assert not out.exists() and not (tmp_path / "data").exists()
    assert kline_requests(sim, "BTCUSDT") == []


@pytest.mark.parametrize("args, says", [
    (["--symbols", "BTCUSDT", "--timeframe", "1M"], "--timeframe '1M'"),
    (["--symbols", "BTCUSDT", "--days", "2", "--since", "2023-07-01"], "--days or --since, not both"),
    (["--symbols", "BTCUSDT", "--since", "2999-01-01"], "is in the future"),
    (["--top-volume", "2", "--symbols", "BTCUSDT"], "either --symbols or --top-volume"),
    (["--symbols", "BTCUSDT", "--days", "0"], "--days '0': expected a number above 0"),
], ids=["timeframe", "days-and-since", "future", "both", "days"])
def test_bad_input_is_refused_before_connecting(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                args: list[str], says: str) -> None:
    """No exchange at all (a closed port): the command line alone decides; one line, exit 2."""
    config = write_json(tmp_path / "config.json", {"exchange": {"base_url": "http://127.0.0.1:9"}})
    code = main_module.main(["download", "--config", str(config), "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and says in err, err
    assert not (tmp_path / "out").exists()


def test_check_rows_refuses_duplicates_and_disorder_and_reports_gaps() -> None:
    row = ("0", "10", "11", "9", "10.5", "1")
    at = [(str(t),) + row[1:] for t in (0, 300_000, 900_000, 1_200_000)]
    assert store.check_rows(at, BAR_MS, where="t") == [store.Gap(300_000, 900_000, 1)]
    with pytest.raises(store.StoreError, match="duplicate"):
        store.check_rows([at[0], at[0]], BAR_MS, where="t")
    with pytest.raises(store.StoreError, match="out of order"):
        store.check_rows([at[1], at[0]], BAR_MS, where="t")
    with pytest.raises(store.StoreError, match="whole number"):
        store.check_rows([at[0], ("150000",) + row[1:]], BAR_MS, where="t")
    with pytest.raises(store.StoreError, match="inconsistent"):
        store.check_rows([("0", "10", "9.5", "9", "10", "1")], BAR_MS, where="t")  # high below open

