"""The operator API and dashboard: REST, WebSocket push and Prometheus metrics inside the bot.

Import-light on purpose: ``bearer`` (read by ``main.py`` before anything starts) needs no web
framework; ``server.OperatorApi`` (the component) pulls FastAPI and uvicorn in when enabled.
"""
