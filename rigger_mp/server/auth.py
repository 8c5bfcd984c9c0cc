"""The token check of one connection of the JSON-lines port (``server_token``)."""

from __future__ import annotations

from hmac import compare_digest


class TokenCheck:
    """Whether a connection has given the token, and how many wrong ones it sent."""

    __slots__ = ("authed", "failures", "max_failures", "token")

    def __init__(self, token: bytes | None, max_failures: int) -> None:
        self.token = token
        self.max_failures = max_failures
        self.authed = token is None
        self.failures = 0

    def check(self, given: str) -> str | None:
        """None if ``given`` is the token (or none is set); else the error message, which
        says the connection closes once ``max_auth_failures`` wrong ones came."""
        token = self.token
        # surrogatepass: JSON may carry a lone surrogate ("\ud800"), which plain UTF-8
        # cannot encode; it is simply not the token.
        if token is None or compare_digest(given.encode("utf-8", "surrogatepass"), token):
            self.authed = True
            return None
        self.failures = n = self.failures + 1
        if n < self.max_failures:
            return "wrong token"
        return (
            f"wrong token; {n} failed auths (max_auth_failures {self.max_failures}): "
            "closing the connection"
        )

    @property
    def exhausted(self) -> bool:
        """``max_auth_failures`` wrong tokens came: the connection is to close."""
        return not self.authed and self.failures >= self.max_failures
