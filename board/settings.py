"""The board's own settings (BEESTOWN_BOARD_*), read beside the worker's `Settings`."""

from __future__ import annotations

import ipaddress

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class BoardSettings(BaseSettings):
    """Where the board listens and how it knows who is signed in."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    host: str = Field("127.0.0.1", validation_alias="BEESTOWN_BOARD_HOST")
    port: int = Field(8377, ge=0, le=65535, validation_alias="BEESTOWN_BOARD_PORT")
    # Signs the session cookies. Unset: a random key kept in PostgreSQL (board_config),
    # shared by every board process on the database and kept across restarts.
    secret_key: SecretStr | None = Field(None, validation_alias="BEESTOWN_BOARD_SECRET")
    # A header a reverse proxy sets to the signed-in account's name (oauth2-proxy sends
    # X-Forwarded-User). Off unless named: anyone could send it to an exposed board.
    trusted_header: str | None = Field(None, validation_alias="BEESTOWN_BOARD_TRUSTED_HEADER")
    # Send the session cookie only over HTTPS (on behind a TLS-terminating proxy).
    secure_cookies: bool = Field(False, validation_alias="BEESTOWN_BOARD_SECURE_COOKIES")
    session_max_age_s: int = Field(12 * 3600, ge=60, validation_alias="BEESTOWN_BOARD_SESSION_S")
    # Failed sign-ins allowed per client address and account within `signin_window_s`.
    signin_attempts: int = Field(5, ge=1, validation_alias="BEESTOWN_BOARD_SIGNIN_ATTEMPTS")
    signin_window_s: float = Field(60.0, gt=0, validation_alias="BEESTOWN_BOARD_SIGNIN_WINDOW")
    page_size: int = Field(50, ge=5, le=500, validation_alias="BEESTOWN_BOARD_PAGE_SIZE")
    # Prometheus metrics on their own port (0: off).
    metrics_port: int = Field(0, ge=0, le=65535, validation_alias="BEESTOWN_BOARD_METRICS_PORT")


def is_loopback(host: str) -> bool:
    """Return True when `host` only accepts connections from this machine."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name that may resolve anywhere
