"""Settings, read from ``EHR_SANDBOX_*`` environment variables and overridden by CLI flags."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path


def default_data_dir() -> Path:
    """Where the embedded SQLite database and the generated admin token live.

    ``$EHR_SANDBOX_DATA_DIR``, else ``$XDG_DATA_HOME/ehr-sandbox``, else ``~/.local/share/ehr-sandbox``.
    """
    if explicit := os.environ.get("EHR_SANDBOX_DATA_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ehr-sandbox"


@dataclass(frozen=True)
class Settings:
    database_url: str
    host: str = "127.0.0.1"
    port: int = 8080
    base_url: str | None = None  # public URL of the server, used in fullUrl and links; derived from host:port if unset
    admin_token: str | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    default_page_size: int = 20
    max_page_size: int = 1000
    data_dir: Path = field(default_factory=default_data_dir)
    log_format: str = "text"  # or "json": one JSON object per line, with the request id
    access_log: bool = True
    # The built-in demo lab `serve` runs (host to send to, port): every new cohort sandbox sends its lab orders
    # there (sandbox.hl7v2.demo_lab.connect).  None: no demo lab, and new sandboxes get no destination.
    demo_lab: tuple[str, int] | None = None

    @property
    def public_base(self) -> str:
        return (self.base_url or f"http://{self.host}:{self.port}").rstrip("/")

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        data_dir = default_data_dir()
        url = env.get("EHR_SANDBOX_DATABASE_URL") or f"sqlite:///{data_dir / 'ehr-sandbox.db'}"
        return cls(
            database_url=url,
            host=env.get("EHR_SANDBOX_HOST", "127.0.0.1"),
            port=int(env.get("EHR_SANDBOX_PORT", "8080")),
            base_url=env.get("EHR_SANDBOX_BASE_URL") or None,
            admin_token=env.get("EHR_SANDBOX_ADMIN_TOKEN") or None,
            max_body_bytes=int(env.get("EHR_SANDBOX_MAX_BODY_BYTES", str(16 * 1024 * 1024))),
            data_dir=data_dir,
            log_format=env.get("EHR_SANDBOX_LOG_FORMAT", "text"),
        )


def load_or_create_admin_token(settings: Settings) -> tuple[str, bool]:
    """The admin token from the settings, else the one saved in the data dir, else a new one (saved).

    Returns the token and whether it was generated just now, so the CLI can print it once.
    """
    if settings.admin_token:
        return settings.admin_token, False
    path = settings.data_dir / "admin-token"
    if path.exists():
        return path.read_text().strip(), False
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token, True
