"""``python -m simulator``: run the offline Binance USD-M simulator on 127.0.0.1.

Runs until Ctrl+C / SIGTERM, then stops cleanly (state file saved if configured). A usage
or configuration error prints one line and exits with status 2. See ``--help``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

from loguru import logger

from simulator.config import (
    DEFAULT_API_KEY,
    DEFAULT_API_SECRET,
    DEFAULT_DATA_DIR,
    AccountConfig,
    FillConfig,
    RateLimitConfig,
    ReplayConfig,
    SimulatorConfig,
)
from simulator.faults import MALFORMED_KINDS, FaultConfig
from simulator.funding import FundingConfig

_EPILOG = f"""
quote rate (candles source) = symbols x steps-per-bar x speed / 300
  e.g. 20 symbols, --steps-per-bar 60 --speed 5000 -> 20,000 bookTicker frames/s;
  or give --quotes-per-second and the speed is computed.

fault settings (--faults, comma-separated key=value or a JSON object; change at run time
with POST /sim/faults):
  seed=N  partial_fill_probability=P  reject_probability=P  reject_code=-1008|-2010|-2019|...
  lost_response_probability=P  latency_ms=N  latency_jitter_ms=N
  http_error_probability=P  http_error_status=429|418|500|502|503|504
  ws_disconnect_every_seconds=S  malformed_frame_probability=P
  malformed_kinds=kind+kind  (kinds: {', '.join(MALFORMED_KINDS)})
  unknown order outcomes: lands_late_probability=P lands_late_ms=N (default 300)
  unknown_503_probability=P unknown_503_applied_probability=P (default 0.5)
  timeout_1007_probability=P timeout_1007_applied_probability=P (default 0.5)
  reporting lags (wall ms): trade_lag_ms=N  position_lag_ms=N

admin endpoints (no key, loopback only): GET /sim/health /sim/orders /sim/positions
/sim/markets /sim/stats /sim/faults; POST /sim/faults /sim/faults/http-burst /sim/ws/drop
/sim/reset /sim/replay /sim/state/save

credentials: the default account uses simulator.config.DEFAULT_API_KEY / DEFAULT_API_SECRET
(public test values); --accounts FILE takes a JSON list of
{{"name", "api_key", "secret", "starting_balance_usdt", "default_leverage", "taker_fee_rate",
"maker_fee_rate", "pay_fees_in_bnb", "starting_balance_bnb"}} (fee rates: the account's own tier;
pay_fees_in_bnb needs --bnb-price).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m simulator",
        description="Offline Binance USD-M futures simulator (REST + WebSocket) replaying "
                    "real recorded market data on 127.0.0.1.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR,
                   help="data directory with the candle, tick and exchange-info folders "
                        "(default: %(default)s)")
    p.add_argument("--port", type=int, default=8765,
                   help="TCP port on 127.0.0.1; 0 picks a free one (default: %(default)s)")
    p.add_argument("--symbols", default="",
                   help="comma-separated symbols to serve, e.g. BTCUSDT,ETHUSDT (default: all "
                        "with data)")
    p.add_argument("--source", choices=("candles", "ticks"), default="candles",
                   help="replay 5m candles along intrabar paths, or real bookTicker captures")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--speed", type=float, default=1.0,
                      help="replay ms per wall ms; 0 = as fast as clients consume "
                           "(default: %(default)s)")
    rate.add_argument("--quotes-per-second", type=float, default=None,
                      help="target bookTicker rate over all symbols (candles source); sets speed")
    p.add_argument("--steps-per-bar", type=int, default=60,
                   help="quotes per symbol per candle (default: %(default)s)")
    p.add_argument("--warmup-bars", type=int, default=1000,
                   help="replay starts at this bar; klines serve the bars before it "
                        "(default: %(default)s)")
    p.add_argument("--spread-ticks", type=int, default=1, help="bid/ask spread in ticks (>= 1)")
    p.add_argument("--spread-range-fraction", type=float, default=0.0,
                   help="candles source: spread = max(spread-ticks, bar range in ticks x this); 0 = constant")
    p.add_argument("--stamp-jitter", action="store_true",
                   help="candles source: each symbol stamps its quotes itself within each step")
    p.add_argument("--path-order", choices=("nearest", "random"), default="nearest",
                   help="which candle extreme the intrabar path visits first")
    p.add_argument("--seed", type=int, default=7, help="seed of the replay's random draws")
    p.add_argument("--tick-dates", default="",
                   help="ticks source: comma-separated YYYYMMDD capture dates (default: all)")
    p.add_argument("--faults", default="", help="fault settings, see below")
    p.add_argument("--no-rate-limits", action="store_true",
                   help="do not enforce Binance's request-weight and order-count limits (on by "
                        "default: 2,400 weight/min per IP, 300 orders/10 s and 1,200/min per "
                        "account, 429 with Retry-After, 418 bans)")
    p.add_argument("--taker-fee", default="0.0005", help="taker fee rate (default: %(default)s, VIP 0)")
    p.add_argument("--maker-fee", default="0.0002", help="maker fee rate (default: %(default)s)")
    p.add_argument("--bnb-price", default="", help="BNB price in USDT for fees paid in BNB (default: none)")
    p.add_argument("--funding-rate", default="0.0001",
                   help="funding rate per interval of every symbol (default: %(default)s; 0 disables)")
    p.add_argument("--funding-interval-seconds", type=int, default=28_800,
                   help="funding interval in replay seconds (default: %(default)s = 8 h)")
    p.add_argument("--slippage-bps", default="0", help="taker slippage in bps (default: 0)")
    p.add_argument("--depth-levels", type=int, default=5,
                   help="synthetic book levels behind the top (default: %(default)s)")
    p.add_argument("--balance", default="10000",
                   help="starting USDT balance of the default account (default: %(default)s)")
    p.add_argument("--accounts", type=Path, default=None, help="JSON file of accounts")
    p.add_argument("--state-file", type=Path, default=None,
                   help="save engine state and replay position here (on stop and every 30 s) "
                        "and restore from it at start")
    p.add_argument("--ticker-interval-ms", type=int, default=1000,
                   help="miniTicker/ticker stream cadence in wall ms (default: %(default)s)")
    p.add_argument("--loop-interval-ms", type=float, default=1.0,
                   help="market loop period in wall ms; frames of one period go out as one "
                        "batch per client (default: %(default)s)")
    p.add_argument("--log-level", default="INFO",
                   choices=("TRACE", "DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """Build the run's config; raises ``ValueError`` with a one-line reason."""
    symbols = tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip()) or None
    speed = args.speed
    if args.quotes_per_second is not None:
        if args.source != "candles":
            raise ValueError("--quotes-per-second applies to the candles source only")
        n_symbols = len(symbols) if symbols else len(list((args.data / "binance-usdm-perp-5m-"
                                                            "2023-07").glob("*-5m.csv.gz")))
        if n_symbols == 0:
            raise ValueError(f"--data {args.data}: no candle files")
        speed = args.quotes_per_second * 300 / (n_symbols * args.steps_per_bar)
    replay = ReplayConfig(source=args.source, speed=speed, steps_per_bar=args.steps_per_bar,
                          warmup_bars=args.warmup_bars, spread_ticks=args.spread_ticks,
                          spread_range_fraction=args.spread_range_fraction, stamp_jitter=args.stamp_jitter,
                          path_order=args.path_order, seed=args.seed,
                          tick_dates=tuple(d for d in args.tick_dates.split(",") if d) or None)
    fills = FillConfig(taker_fee_rate=_dec("--taker-fee", args.taker_fee),
                       maker_fee_rate=_dec("--maker-fee", args.maker_fee),
                       slippage_bps=_dec("--slippage-bps", args.slippage_bps),
                       depth_levels=args.depth_levels,
                       bnb_price_usdt=_dec("--bnb-price", args.bnb_price) if args.bnb_price else None)
    funding_rate = _dec("--funding-rate", args.funding_rate)
    funding = FundingConfig(enabled=funding_rate != 0, default_rate=funding_rate,
                            default_interval_seconds=args.funding_interval_seconds)
    return SimulatorConfig(data_dir=args.data, symbols=symbols, port=args.port, replay=replay,
                           fills=fills, faults=parse_faults(args.faults), funding=funding,
                           accounts=_accounts(args), state_file=args.state_file,
                           ws_ticker_interval_ms=args.ticker_interval_ms,
                           loop_interval_ms=args.loop_interval_ms,
                           rate_limits=RateLimitConfig(enabled=not args.no_rate_limits))


def parse_faults(text: str) -> FaultConfig:
    """``--faults``: ``key=value,key=value`` or a JSON object (``+`` separates kinds)."""
    text = text.strip()
    if not text:
        return FaultConfig()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--faults: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError("--faults: expected a JSON object")
        return FaultConfig.from_mapping(data)
    pairs: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--faults: {item!r} is not key=value")
        pairs[key.strip()] = value.strip().replace("+", ",")
    return FaultConfig.from_mapping(pairs)


def _accounts(args: argparse.Namespace) -> tuple[AccountConfig, ...]:
    if args.accounts is None:
        return (AccountConfig(api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET,
                              starting_balance_usdt=_dec("--balance", args.balance)),)
    try:
        rows = json.loads(args.accounts.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--accounts {args.accounts}: cannot read ({exc})") from None
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"--accounts {args.accounts}: expected a non-empty JSON list")
    accounts = []
    for row in rows:
        if not isinstance(row, dict):
            raise ValueError(f"--accounts {args.accounts}: each entry must be an object")
        accounts.append(AccountConfig(
            name=str(row.get("name", "default")), api_key=str(row["api_key"]),
            secret=str(row["secret"]),
            starting_balance_usdt=_dec("starting_balance_usdt",
                                       str(row.get("starting_balance_usdt", "10000"))),
            default_leverage=int(row.get("default_leverage", 20)),
            taker_fee_rate=_dec_opt("taker_fee_rate", row.get("taker_fee_rate")),
            maker_fee_rate=_dec_opt("maker_fee_rate", row.get("maker_fee_rate")),
            pay_fees_in_bnb=bool(row.get("pay_fees_in_bnb", False)),
            starting_balance_bnb=_dec("starting_balance_bnb", str(row.get("starting_balance_bnb", "0")))))
    return tuple(accounts)


def _dec_opt(name: str, value: object) -> Decimal | None:
    return None if value is None else _dec(name, str(value))


def _dec(name: str, text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{name} {text!r}: expected a decimal number") from None


async def _serve(config: SimulatorConfig) -> None:
    from simulator.server import SimulatorServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with SimulatorServer(config) as sim:
        rate = len(sim.replay.symbols) * config.replay.steps_per_bar * sim.clock.speed / (
            sim.replay.base_interval_ms / 1000)
        print(f"simulator ready: REST {sim.base_url}  WS {sim.ws_url}  "
              f"({len(sim.replay.symbols)} symbols, speed {sim.clock.speed:g}"
              + (f", ~{rate:,.0f} quotes/s" if config.replay.source == "candles" else "")
              + ")", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level=args.log_level)
    try:
        config = config_from_args(args)
    except (ValueError, KeyError) as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(config))
    except (ValueError, FileNotFoundError) as exc:  # bad data dir, unknown symbol, state file
        print(f"simulator: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # port in use
        print(f"simulator: cannot listen on 127.0.0.1:{config.port}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
