"""The project's exception hierarchy, named by what the caller should do.

Every error the bot raises on purpose derives from ``PairsBotError``. ccxt's exceptions are
translated into these once, at the adapter boundary, so nothing above ``execution/exchange.py``
or ``signals/market_data.py`` ever catches a ccxt type.
"""

from __future__ import annotations


class PairsBotError(Exception):
    """Base of every error the bot raises on purpose."""


class ConfigurationError(PairsBotError):
    """The user's configuration or command line is wrong. Action: print one line, exit 2.

    ``file`` is the file at fault, ``field`` the dotted path inside it, ``value`` what was found
    and ``expected`` what would have been accepted. ``str()`` is the one line the user sees.
    """

    def __init__(self, *, file: str, field: str, value: object, expected: str) -> None:
        self.file = file
        self.field = field
        self.value = value
        self.expected = expected
        super().__init__(self.one_line())

    def one_line(self) -> str:
        shown = _short_repr(self.value)
        where = f"{self.file}: {self.field}" if self.field else self.file
        return f"config error: {where} = {shown}: expected {self.expected}"


class UsageError(PairsBotError):
    """The command line asks for something that cannot be done as asked. Action: exit 2."""


class RetryableError(PairsBotError):
    """A transient failure (network, rate limit, exchange busy). Action: retry with backoff."""


class StartupFailed(PairsBotError):
    """The start kept failing on retryable errors until its deadline. Action: one line, exit 1.

    ``last_error`` is the last retryable error (None when every attempt hung until the deadline);
    ``hung`` says the last attempt was cut by the deadline rather than failing by itself.
    """

    def __init__(self, *, last_error: RetryableError | None, attempts: int, elapsed_seconds: float,
                 hung: bool) -> None:
        self.last_error = last_error
        self.attempts = attempts
        self.elapsed_seconds = elapsed_seconds
        self.hung = hung
        detail = str(last_error)
        causes = _cause_text(last_error)
        if causes:
            detail += f" ({causes})"
        what = detail
        if hung:
            what = "no answer from the exchange before the deadline"
            if last_error is not None:
                what += f" (the attempt before: {detail})"
        plural = "" if attempts == 1 else "s"
        super().__init__(f"startup failed after {elapsed_seconds:.0f} s ({attempts} attempt{plural}): {what}")


def _cause_text(exc: BaseException | None) -> str:
    """What the error's causes add to its text: the library's class (e.g. ccxt's RequestTimeout)
    and the innermost cause when it says more (e.g. "Connect call failed")."""
    if exc is None or exc.__cause__ is None:
        return ""
    parts, root, seen = [type(exc.__cause__).__name__], exc.__cause__, {id(exc)}
    while root.__cause__ is not None and id(root) not in seen:
        seen.add(id(root))
        root = root.__cause__
    if root is not exc.__cause__ and str(root) and str(root) not in str(exc):
        parts.append(f"{type(root).__name__}: {root}")
    return ": ".join(parts)


class PermanentError(PairsBotError):
    """The request itself is wrong and will fail again unchanged. Action: do not retry."""


class InsufficientFundsError(PermanentError):
    """Not enough margin or balance for the order. Action: refuse the trade, do not retry."""


class InvalidOrderError(PermanentError):
    """The exchange rejected the order's parameters. Action: fix the request or give up."""


class OrderNotFoundError(PermanentError):
    """The exchange does not know the order. Action: treat as never placed (after a lookup)."""


class AuthenticationError(PermanentError):
    """Bad API key, secret or signature. Action: stop trading, tell the operator."""


class AccountSetupError(PermanentError):
    """The exchange account is set up in a way the bot cannot trade with (hedge position mode,
    isolated margin asked for in Multi-Assets mode). Action: refuse to start with the one line,
    which says what to change; exit 2, like a configuration error."""


class Marker:
    """A stand-in value shown bare in messages, such as ``<missing>``."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


MISSING = Marker("<missing>")


def _short_repr(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
