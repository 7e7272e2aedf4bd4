"""``Journal.net_filled`` reads ``symbol_net`` (schema v5), kept in the transaction that changes a
fill: it must equal the sum over every order of the journal (the old full scan) after every
change, through refused transitions, and after a v4 file is migrated with fills already in it."""

from __future__ import annotations

import random
import sqlite3
from decimal import Decimal as D
from pathlib import Path

import pytest

from execution.journal import IllegalTransitionError, Journal, OrderStatus as S, migrate
from execution.journal_models import OrderPurpose

SYMBOLS = ("ETHUSDT", "BTCUSDT", "EOSUSDT")


def scanned_net(journal: Journal, symbol: str) -> D:
    """What net_filled was before v5: every order of the symbol, summed."""
    rows = journal._db().execute("SELECT side, filled_qty FROM orders WHERE symbol = ?", (symbol,)).fetchall()
    return sum((D(q) if side == "buy" else -D(q) for side, q in rows), D(0))


def _intent(journal: Journal, cid: str, symbol: str, side: str, qty: D) -> None:
    journal.record_order_intent(client_order_id=cid, signal_id=f"sig-{cid}", pair_id="P", leg="a",
                                purpose=OrderPurpose.ENTRY, attempt=0, symbol=symbol, side=side,
                                order_type="market", qty=qty)


@pytest.mark.parametrize("seed", range(5))
def test_net_filled_equals_the_sum_over_every_order_after_every_change(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    with Journal.open(tmp_path / "j.sqlite", mode="paper") as journal:
        filled: dict[str, D] = {}
        for k in range(120):
            cid = f"o{k}"
            qty = D(rng.randint(1, 500)) / 100
            _intent(journal, cid, rng.choice(SYMBOLS), rng.choice(("buy", "sell")), qty)
            journal.update_order(cid, status=S.SENT)
            journal.update_order(cid, status=S.ACKED)
            filled[cid] = D(0)
            for _ in range(rng.randint(0, 3)):  # partial fills, then perhaps the rest
                part = min(qty, filled[cid] + D(rng.randint(1, 200)) / 100)
                status = S.FILLED if part == qty else S.PARTIALLY_FILLED
                journal.update_order(cid, status=status, filled_qty=part)
                filled[cid] = part
                if status is S.FILLED:
                    break
            if rng.random() < 0.3:  # a refused change rolls back with nothing counted
                with pytest.raises(IllegalTransitionError):
                    journal.update_order(cid, status=S.INTENT)
            for symbol in SYMBOLS:
                assert journal.net_filled(symbol) == scanned_net(journal, symbol), (k, symbol)
        assert any(journal.net_filled(s) != 0 for s in SYMBOLS)


def test_a_v4_file_gets_its_nets_from_the_orders_it_holds(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal.open(path, mode="paper") as journal:
        for k, (symbol, side, qty) in enumerate([("ETHUSDT", "buy", D("1.5")), ("ETHUSDT", "sell", D("0.25")),
                                                 ("BTCUSDT", "sell", D("0.010"))]):
            _intent(journal, f"o{k}", symbol, side, qty)
            journal.update_order(f"o{k}", status=S.FILLED, filled_qty=qty)
    raw = sqlite3.connect(path, isolation_level=None)
    try:  # back to v4: no symbol_net table
        raw.execute("DROP TABLE symbol_net")
        raw.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
        assert migrate(raw, mode="paper") == 5
    finally:
        raw.close()
    with Journal.open(path, mode="paper") as journal:
        assert journal.net_filled("ETHUSDT") == D("1.25") and journal.net_filled("BTCUSDT") == D("-0.010")
        assert journal.net_filled("EOSUSDT") == 0
