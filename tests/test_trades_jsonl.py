"""Issue 12 item 8: every trades.jsonl line says when (ISO UTC with ms, epoch ms), in which mode and
in which session it was written; the event's own fields follow, redacted like every sink."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from loguru import logger

from core.config import LoggingConfig
from core.log_setup import RunContext, log_trade_event, reset_logging, setup_logging
from core.stats import SessionStats, new_session_id


def test_each_line_is_stamped_with_time_mode_and_session(tmp_path: Path) -> None:
    stats = SessionStats(mode="PAPER")
    run = RunContext(mode="paper", session_id=stats.session_id)
    paths = setup_logging(LoggingConfig(dir=str(tmp_path)), secrets=["S3CR3T-VALUE"], run=run)
    before = datetime.now(timezone.utc)
    try:
        log_trade_event("order_final", pair_id="EOS_AXS", qty="1.5", note="sent with S3CR3T-VALUE {braces}")
        logger.info("not a trade event")
        log_trade_event("halt", pair_id="BTC_ETH", reason="leg open")
    finally:
        reset_logging()
    after = datetime.now(timezone.utc)
    lines = [json.loads(line) for line in paths.trades_log.read_text(encoding="utf-8").splitlines()]
    assert [e["event"] for e in lines] == ["order_final", "halt"]
    for event in lines:
        assert list(event)[:5] == ["ts", "ts_ms", "mode", "session_id", "event"]
        moment = datetime.strptime(event["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= moment <= after
        assert event["ts_ms"] == int(moment.timestamp() * 1000 + 0.5)
        assert (event["mode"], event["session_id"]) == ("paper", stats.session_id)
    assert lines[0]["note"] == "sent with *** {braces}" and lines[0]["qty"] == "1.5"
    assert stats.snapshot()["session_id"] == stats.session_id


def test_session_ids_differ_per_run_and_sort_by_start() -> None:
    early = new_session_id(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    late = new_session_id(datetime(2026, 1, 2, 3, 4, 6, tzinfo=timezone.utc))
    same_second = new_session_id(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    assert early < late and early != same_second and early[:17] == same_second[:17]
