"""Every setting, read from the environment (and `.env`) in this one place.

`.env.example` lists each one with its default and what it does; keep the two in step.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

try:  # python-dotenv is a hard dependency, but settings must not fail to import without it
    from dotenv import load_dotenv
except ImportError:  # pragma: no cover
    load_dotenv = None

ROOT = Path(__file__).resolve().parent.parent
DEV_PEPPER = "dev-pepper-change-me"  # the public default: create_app refuses it outside development


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _bool(name: str, default: bool) -> bool:
    return _env(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def _pairs(value: str) -> tuple[tuple[str, int], ...]:
    """`name=int,name=int` (OPENPI_TIER_CONNECTIONS)."""
    items = (item.split("=", 1) for item in value.split(",") if "=" in item)
    return tuple((k.strip(), int(v)) for k, v in items)


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    enabled_models: str
    model_dir: Path
    model_dtype: str
    gpu_device: str
    api_key_pepper: str
    max_image_bytes: int
    default_deadline_ms: int
    wait_max_s: float
    batch_max_size: int
    batch_max_wait_ms: float
    batch_max_background: int
    batch_hold_for_cadence: bool
    torch_cpu_threads: int
    cors_origins: list[str]
    safety_classifier_enabled: bool
    safety_classifier_path: str
    safety_classifier_threshold: float
    safety_default_robot: str
    safety_alignment_checks: tuple[str, ...]
    log_level: str
    max_deadline_ms: int
    broker_visibility_timeout_s: int
    worker_heartbeat_s: float
    max_queue_depth: int
    replay_data_root: Path = ROOT / ".data" / "datasets"
    replay_upload_dir: Path = ROOT / ".data" / "uploads"
    replay_steps_per_unit: int = 10  # REPLAY_STEPS_PER_UNIT: a replay costs ceil(steps / this) quota units
    replay_probe_memory_mb: int = 1024  # REPLAY_PROBE_MEMORY_MB: address space of the dataset-reading child
    replay_probe_seconds: float = 20.0  # REPLAY_PROBE_SECONDS: its CPU time and wall-clock limit
    replay_shared_dir: str = ""  # REPLAY_SHARED_DIR: a folder under the data root every customer may read
    auth_cache_s: float = 2.0  # AUTH_CACHE_S: how long a web process trusts a key it has just checked
    ops_token: str = ""  # OPS_TOKEN: /health details for operators; empty: nobody gets them
    environment: str = "production"  # VLAAPI_ENV: "development" (make run) relaxes the secrets check
    db_connect_timeout_s: int = 5
    db_statement_timeout_ms: int = 30000
    db_pool_size: int = 10
    db_max_overflow: int = 20
    db_pool_timeout_s: float = 5.0
    worker_watchdog_s: float = 20.0
    worker_drain_s: float = 10.0
    redis_sentinel_master: str = "mymaster"
    # OPENPI_TIER_CONNECTIONS: websocket connections one customer may hold on one openpi process, by tier
    openpi_tier_connections: tuple[tuple[str, int], ...] = (("free", 4), ("pro", 32), ("enterprise", 128))
    openpi_customer_connections: int = 4  # OPENPI_CUSTOMER_CONNECTIONS: for a tier the list above does not name
    fingerprint_dir: Path | None = None  # FINGERPRINT_DIR: fingerprints of read-only checkpoints (docs/models.md)
    allow_unregistered_checkpoints: bool = False  # ALLOW_UNREGISTERED_CHECKPOINTS: serve unproven in production
    batch_schedule: str = "edf"  # BATCH_SCHEDULE: "edf" (deadline-aware, workers/gpu/schedule.py) or "fifo"
    batch_deadline_margin_ms: float = 10.0  # BATCH_DEADLINE_MARGIN_MS: a pass ends this long before a deadline
    admission_fail_fast: bool = True  # ADMISSION_FAIL_FAST: 503 deadline_unattainable at once (admission.py)
    sim_allowed: bool = False  # VLAAPI_BENCHMARK: the sim policy may load outside development

    def openpi_connections_for(self, tier: str) -> int:
        return dict(self.openpi_tier_connections).get(tier, self.openpi_customer_connections)

    @classmethod
    def from_env(cls) -> Settings:
        if load_dotenv is not None:
            load_dotenv(ROOT / ".env", override=False)
        return cls(
            database_url=_env("DATABASE_URL", ""),
            redis_url=_env("REDIS_URL", ""),
            enabled_models=_env("ENABLED_MODELS", "openvla-tiny,pi0-tiny"),
            model_dir=Path(_env("MODEL_DIR", str(ROOT / ".data" / "models"))),
            model_dtype=_env("MODEL_DTYPE", "auto"),
            gpu_device=_env("GPU_DEVICE", "auto"),
            api_key_pepper=_env("API_KEY_PEPPER", DEV_PEPPER),
            max_image_bytes=int(_env("MAX_IMAGE_BYTES", str(4 * 1024 * 1024))),
            default_deadline_ms=int(_env("DEFAULT_DEADLINE_MS", "30000")),
            wait_max_s=float(_env("WAIT_MAX_S", "60")),
            batch_max_size=int(_env("BATCH_MAX_SIZE", "8")),
            batch_max_wait_ms=float(_env("BATCH_MAX_WAIT_MS", "5")),
            batch_max_background=int(_env("BATCH_MAX_BACKGROUND", "1")),
            batch_hold_for_cadence=_bool("BATCH_HOLD_FOR_CADENCE", True),
            torch_cpu_threads=int(_env("TORCH_CPU_THREADS", "1")),
            cors_origins=[o.strip() for o in _env("CORS_ORIGINS", "").split(",") if o.strip()],
            safety_classifier_enabled=_bool("SAFETY_CLASSIFIER_ENABLED", False),
            safety_classifier_path=_env("SAFETY_CLASSIFIER_PATH",
                                        str(ROOT / "safety" / "models" / "action_classifier.safetensors")),
            safety_default_robot=_env("SAFETY_DEFAULT_ROBOT", "widowx_250"),
            safety_alignment_checks=tuple(p.strip() for p in _env("SAFETY_ALIGNMENT_CHECKS", "").split(",")
                                          if p.strip()),
            safety_classifier_threshold=float(_env("SAFETY_CLASSIFIER_THRESHOLD", "0.5")),
            log_level=_env("LOG_LEVEL", "INFO"),
            max_deadline_ms=int(_env("MAX_DEADLINE_MS", "300000")),
            broker_visibility_timeout_s=int(_env("BROKER_VISIBILITY_TIMEOUT_S", "600")),
            worker_heartbeat_s=float(_env("WORKER_HEARTBEAT_S", "0.5")),
            max_queue_depth=int(_env("MAX_QUEUE_DEPTH", "1000")),
            replay_data_root=Path(_env("REPLAY_DATA_ROOT", str(ROOT / ".data" / "datasets"))),
            replay_upload_dir=Path(_env("REPLAY_UPLOAD_DIR", str(ROOT / ".data" / "uploads"))),
            replay_shared_dir=_env("REPLAY_SHARED_DIR", "").strip(),
            replay_steps_per_unit=max(1, int(_env("REPLAY_STEPS_PER_UNIT", "10"))),
            replay_probe_memory_mb=int(_env("REPLAY_PROBE_MEMORY_MB", "1024")),
            replay_probe_seconds=float(_env("REPLAY_PROBE_SECONDS", "20")),
            auth_cache_s=float(_env("AUTH_CACHE_S", "2")),
            ops_token=_env("OPS_TOKEN", ""),
            environment=_env("VLAAPI_ENV", "production").strip().lower(),
            db_connect_timeout_s=int(_env("DB_CONNECT_TIMEOUT_S", "5")),
            db_statement_timeout_ms=int(_env("DB_STATEMENT_TIMEOUT_MS", "30000")),
            db_pool_size=int(_env("DB_POOL_SIZE", "10")),
            db_max_overflow=int(_env("DB_MAX_OVERFLOW", "20")),
            db_pool_timeout_s=float(_env("DB_POOL_TIMEOUT_S", "5")),
            worker_watchdog_s=float(_env("WORKER_WATCHDOG_S", "20")),
            worker_drain_s=float(_env("WORKER_DRAIN_S", "10")),
            redis_sentinel_master=_env("REDIS_SENTINEL_MASTER", "mymaster"),
            openpi_tier_connections=_pairs(_env("OPENPI_TIER_CONNECTIONS", "free=4,pro=32,enterprise=128")),
            openpi_customer_connections=int(_env("OPENPI_CUSTOMER_CONNECTIONS", "4")),
            fingerprint_dir=Path(_env("FINGERPRINT_DIR", "")) if _env("FINGERPRINT_DIR", "").strip() else None,
            allow_unregistered_checkpoints=_bool("ALLOW_UNREGISTERED_CHECKPOINTS", False),
            batch_schedule=_env("BATCH_SCHEDULE", "edf").strip().lower(),
            batch_deadline_margin_ms=float(_env("BATCH_DEADLINE_MARGIN_MS", "10")),
            admission_fail_fast=_bool("ADMISSION_FAIL_FAST", True),
            sim_allowed=_bool("VLAAPI_BENCHMARK", False),
        )


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read once (the environment and `.env` do not change under a running process)."""
    return Settings.from_env()


def reload_settings() -> Settings:
    """Read the environment again: for the CLI after it has exported the URLs of the services it started."""
    get_settings.cache_clear()
    return get_settings()
