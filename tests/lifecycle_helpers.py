"""The bot's real lifecycle around one test component, in the test process or in a child.

A scenario that sends signals runs in a child process (``SECOND_CTRL_C_CHILD``): a SIGINT sent
to the pytest process itself, at a moment when the bot's handler is not installed, would end
the whole test session with KeyboardInterrupt.
"""

from __future__ import annotations

import asyncio
from typing import Any

import main as bot_main
from core.log_setup import setup_logging
from core.stats import SessionStats
from tests.conftest import PROJECT_DIR, PYTHON, BotProcess, clean_env


class HangingComponent:
    """A component whose stop never returns, to prove shutdown is bounded.

    With ``announce`` it prints ``hanging: started`` and ``hanging: stop called`` so a parent
    process can wait for those moments instead of sleeping.
    """

    name = "hanging"

    def __init__(self, *, announce: bool = False) -> None:
        self.started = False
        self.stop_cancelled = False
        self._announce = announce

    async def start(self) -> None:
        self.started = True
        self._say("hanging: started")

    async def stop(self) -> None:
        self._say("hanging: stop called")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.stop_cancelled = True
            raise

    def stats(self) -> dict[str, Any]:
        return {"started": self.started}

    def _say(self, line: str) -> None:
        if self._announce:
            print(line, flush=True)


class BareBot(bot_main.TradingBot):
    """The real lifecycle with one test component instead of the trading pipeline."""

    def __init__(self, options: bot_main.CliOptions, component: Any) -> None:
        super().__init__(options)
        self._component = component

    async def initialize_components(self) -> None:
        self.log_paths = setup_logging(self.config.logging.model_copy(
            update={"dir": str(self.options.config_path.parent / "logs")}), secrets=[])
        self.stats = SessionStats(mode="PAPER")
        self.components = [self._component]
        self.stats.register_section(self._component.name, self._component.stats)


# argv[1]: the config.json. Components start after the signal handlers are installed, so
# "hanging: started" means a SIGINT now reaches the bot. The shutdown bound is lifted in this
# child so the first Ctrl+C waits on the hanging stop for as long as the test needs.
SECOND_CTRL_C_CHILD = """
import asyncio, sys
import main as bot_main
from tests.lifecycle_helpers import BareBot, HangingComponent
bot_main.SHUTDOWN_TIMEOUT_SECONDS = 3600.0
bot = BareBot(bot_main.parse_options(["--config", sys.argv[1]]), HangingComponent(announce=True))
try:
    code = asyncio.run(bot.run())
except asyncio.CancelledError:
    print("run: cancelled", flush=True)
    sys.exit(bot_main.EXIT_FORCED)
print(f"run: returned {code}", flush=True)
sys.exit(code)
"""


class ChildProcess(BotProcess):
    """``python -c CODE ARGS`` from the project folder, its output collected like a bot's."""

    def __init__(self, code: str, *args: str, env: dict[str, str] | None = None) -> None:
        super().__init__([], cwd=PROJECT_DIR, env=env or clean_env(), argv=[PYTHON, "-c", code, *args])
