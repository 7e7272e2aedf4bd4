"""No secret reaches any sink: messages, extras, exception texts, request signatures."""

from __future__ import annotations

import io
import json
from pathlib import Path

from loguru import logger

from core.config import LoggingConfig
from core.log_setup import Redactor, log_trade_event, reset_logging, setup_logging

KEY = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefghijklmnopqrstuvwxyzAB"
SECRET = "ZyXwVuTsRqPoNmLkJiHgFeDcBa9876543210zyxwvutsrqponmlkjihgfedcbaZY"


def test_redactor_masks_literals_and_shapes() -> None:
    redact = Redactor([KEY, SECRET, ""])
    text = redact(f"key={KEY} sec={SECRET} url=/fapi/v1/order?x=1&signature={'ab12' * 16} "
                  f"headers={{'X-MBX-APIKEY': 'OtherKey12345678'}} apiKey='another-secret-value'")
    assert KEY not in text and SECRET not in text
    assert "ab12ab12" not in text and "OtherKey12345678" not in text and "another-secret-value" not in text
    assert text.count("***") == 5


def test_every_sink_is_redacted(tmp_path: Path) -> None:
    console = io.StringIO()
    paths = setup_logging(LoggingConfig(dir=str(tmp_path / "logs")), secrets=[KEY, SECRET], console=console)
    try:
        logger.info("connecting with key {}", KEY)
        logger.bind(note=f"secret {SECRET}").debug("extra field carries a secret")
        try:
            raise RuntimeError(f"exchange said: invalid api key {KEY}")
        except RuntimeError:
            logger.exception("request failed")
        log_trade_event("order_sent", pair_id="EOS_AXS", detail=f"signed with {SECRET}", qty="1.5")
    finally:
        reset_logging()
    texts = {
        "console": console.getvalue(),
        "main": paths.main_log.read_text(),
        "trades": paths.trades_log.read_text(),
    }
    for name, text in texts.items():
        assert KEY not in text and SECRET not in text, name
    assert "connecting with key ***" in texts["console"]
    assert "invalid api key ***" in texts["main"]  # the traceback text is kept, redacted
    assert "Traceback (most recent call last)" in texts["main"]
    event = json.loads(texts["trades"].strip().splitlines()[-1])
    assert event["event"] == "order_sent" and event["pair_id"] == "EOS_AXS" and event["detail"] == "signed with ***"
    assert "order_sent" not in texts["console"]  # trade events go to their own file only
