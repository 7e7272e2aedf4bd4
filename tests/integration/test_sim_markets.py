"""Real ccxt against the simulator: markets, precision helpers, klines, tickers, server time."""

from __future__ import annotations

import asyncio
import csv
import gzip
import time
from decimal import Decimal

import ccxt
import pytest

SYMBOLS_WITH_DATA = ["AAVE", "ADA", "ATOM", "AVAX", "AXS", "BCH", "BTC", "CELO", "COMP", "CRV",
                     "DOGE", "DOT", "EOS", "ETC", "ETH", "LTC", "SAND", "SXP", "TRX", "WAVES"]
FIVE_MIN = 300_000


async def test_load_markets_parses_every_perp_with_precision_and_limits(rest) -> None:
    async with asyncio.timeout(10):
        markets = rest.markets
    assert sorted(markets) == sorted(f"{b}/USDT:USDT" for b in SYMBOLS_WITH_DATA)
    btc = markets["BTC/USDT:USDT"]
    assert (btc["type"], btc["linear"], btc["settle"]) == ("swap", True, "USDT")
    assert btc["id"] == "BTCUSDT"
    assert btc["precision"]["amount"] == 0.001 and btc["precision"]["price"] == 0.01
    assert btc["limits"]["amount"]["min"] == 0.001
    assert btc["limits"]["cost"]["min"] == 5.0
    assert "MARKET" in btc["info"]["orderTypes"]
    celo = markets["CELO/USDT:USDT"]  # missing from the 2021 file: derived filters
    assert celo["precision"]["price"] == 0.001 and celo["precision"]["amount"] == 0.1
    assert celo["limits"]["cost"]["min"] == 5.0
    waves = markets["WAVES/USDT:USDT"]  # 2021 tick 0.001 refined to the 2023 data's 0.0001
    assert waves["precision"]["price"] == 0.0001


async def test_provenance_of_derived_filters_is_reported(sim) -> None:
    rows = {r["symbol"]: r for r in sim.markets()}
    assert rows["CELOUSDT"]["provenance"] == "derived"
    assert rows["WAVESUSDT"]["provenance"].startswith("recorded, tick refined")
    assert rows["BTCUSDT"]["provenance"] == "recorded"


async def test_precision_helpers_truncate_amounts_round_prices(rest) -> None:
    assert rest.amount_to_precision("BTC/USDT:USDT", 0.0019) == "0.001"
    assert rest.amount_to_precision("DOGE/USDT:USDT", 123.9) == "123"
    assert rest.price_to_precision("BTC/USDT:USDT", 30000.126) == "30000.13"
    assert rest.price_to_precision("WAVES/USDT:USDT", 1.93026) == "1.9303"
    with pytest.raises(ccxt.InvalidOrder):
        rest.amount_to_precision("BTC/USDT:USDT", 0.0004)  # below one lot step


async def test_fetch_ohlcv_pages_the_warmup_history_and_matches_the_data(rest, sim) -> None:
    first_open = 1688474100000
    async with asyncio.timeout(15):
        bars: list[list[float]] = []
        since = first_open
        while True:
            page = await rest.fetch_ohlcv("BTC/USDT:USDT", "5m", since=since, limit=1000)
            if not page:
                break
            bars.extend(page)
            if len(page) < 1000:
                break
            since = page[-1][0] + 1
    opens = [b[0] for b in bars]
    assert len(bars) > 1000  # more than one page: warm-up history plus the live bar
    assert opens[0] == first_open
    assert all(b - a == FIVE_MIN for a, b in zip(opens, opens[1:]))  # contiguous, no repeats
    assert opens[-1] <= sim.replay.now_ms < opens[-1] + FIVE_MIN  # last one is in progress
    assert opens[-1] - first_open >= 1000 * FIVE_MIN  # the 1000 warm-up bars are served
    first = _first_csv_row(sim.config.candles_dir / "BTCUSDT-5m.csv.gz")
    half_tick = Decimal(str(rest.market("BTC/USDT:USDT")["precision"]["price"])) / 2
    # Prices are the mids of the quotes (bid = the recorded path, ask one tick above): half a tick up.
    assert bars[0][1:5] == [float(Decimal(v) + half_tick) for v in first[1:5]]
    assert bars[0][5] == float(first[5])


async def test_klines_never_show_the_future_and_aggregate_to_hours(rest, sim) -> None:
    async with asyncio.timeout(10):
        latest = await rest.fetch_ohlcv("ETH/USDT:USDT", "5m", limit=5)
        five = await rest.fetch_ohlcv("ETH/USDT:USDT", "5m", since=1688475600000, limit=12)
        hour = await rest.fetch_ohlcv("ETH/USDT:USDT", "1h", since=1688475600000, limit=1)
    assert latest[-1][0] <= sim.replay.now_ms
    assert hour[0][0] == 1688475600000
    assert hour[0][1] == five[0][1]
    assert hour[0][2] == max(b[2] for b in five) and hour[0][3] == min(b[3] for b in five)
    assert hour[0][4] == five[-1][4]
    assert hour[0][5] == pytest.approx(sum(b[5] for b in five))


async def test_kline_interval_finer_than_the_data_is_refused(rest) -> None:
    async with asyncio.timeout(5):
        with pytest.raises(ccxt.BadRequest, match="-1120"):
            await rest.fetch_ohlcv("BTC/USDT:USDT", "1m", limit=10)


async def test_tickers_and_book_tickers_are_consistent(rest, sim) -> None:
    async with asyncio.timeout(10):
        ticker = await rest.fetch_ticker("BTC/USDT:USDT")
        tickers = await rest.fetch_tickers()
        books = await rest.fetch_bids_asks()
    assert len(tickers) == len(SYMBOLS_WITH_DATA) and len(books) == len(SYMBOLS_WITH_DATA)
    assert ticker["low"] <= ticker["last"] <= ticker["high"]
    book = books["BTC/USDT:USDT"]
    assert 0 < book["bid"] < book["ask"]
    tick = Decimal("0.01")
    assert Decimal(str(book["ask"])) - Decimal(str(book["bid"])) >= tick
    assert abs(book["timestamp"] - sim.replay.now_ms) < 3_600_000  # replay time, not wall


async def test_server_time_is_the_wall_clock(rest) -> None:
    async with asyncio.timeout(5):
        server = await rest.fetch_time()
    assert abs(server - int(time.time() * 1000)) < 5_000


async def test_unknown_symbol_is_bad_symbol(rest) -> None:
    async with asyncio.timeout(5):
        with pytest.raises(ccxt.BadSymbol):
            await rest.fapiPublicGetKlines({"symbol": "NOPEUSDT", "interval": "5m"})


def _first_csv_row(path) -> list[str]:
    with gzip.open(path, "rt") as handle:
        reader = csv.reader(handle)
        next(reader)
        return next(reader)
