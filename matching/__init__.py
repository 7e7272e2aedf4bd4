"""The venue model: one matching engine and fill model for paper trading and the simulator.

Pure and offline: Binance USD-M's order rules, matching, fills, fees, positions and margin, with
no HTTP, no ccxt and no clock of its own. ``execution/paper.py`` (the dry-run adapter) calls
``TradingEngine`` directly; ``simulator/`` puts Binance's REST and WebSocket protocol, the
market replay and fault injection in front of the same engine. Production code imports this
package, never ``simulator/``; this package imports only the standard library
(``tests/test_layering.py`` checks both).
"""
