"""A scratch stack for a benchmark: its own database (recreated) and Redis db number, tiny checkpoints."""
from __future__ import annotations

import redis

from ops import stack
from ops.bench.common import ROOT


def scratch_stack(db_name: str, redis_db: int, models: list[str]) -> dict[str, str]:
    """The environment of the processes a benchmark starts; DATABASE_URL / REDIS_URL or the embedded servers."""
    db_url = stack.ensure_database(stack.ensure_postgres(), db_name, recreate=True)
    redis_url = f"{stack.ensure_redis().rsplit('/', 1)[0]}/{redis_db}"
    redis.Redis.from_url(redis_url).flushdb()
    from workers.store.migrate import upgrade

    upgrade(db_url)
    model_dir = ROOT / ".data" / "models"
    missing = [m for m in models if not (model_dir / m / "config.json").exists()]
    if missing:
        from workers.policies.presets import build_tiny_checkpoints

        build_tiny_checkpoints(model_dir, missing)
    return {"DATABASE_URL": db_url, "REDIS_URL": redis_url, "ENABLED_MODELS": ",".join(models),
            "MODEL_DIR": str(model_dir), "LOG_LEVEL": "WARNING",
            # a scratch stack on this machine: the web accepts the development pepper here only
            "VLAAPI_ENV": "development"}
