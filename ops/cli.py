"""`vlaapi`: operator commands (database, customers, keys, models) and the development stack."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from sqlalchemy import select

from ops import cli_replay, cli_usage, reaper, stack
from ops.cli_dev import dev
from web.accounts import service
from workers.settings import get_settings, reload_settings
from workers.store.db import session_scope
from workers.store.models import ApiKey, Customer


def _db_url() -> str:
    try:  # DATABASE_URL unset: the stack `make run` recorded, if it answers (ops/stack.py)
        if stack.adopt_running_stack():
            reload_settings()  # the URLs were exported after the settings were first read
    except stack.StackNotFound as exc:
        raise click.ClickException(str(exc)) from None
    warning = stack.pepper_warning(get_settings().api_key_pepper)
    if warning:
        click.echo(warning, err=True)
    return get_settings().database_url


@click.group()
def main() -> None:
    """Operate the VLA inference service."""


main.add_command(dev)
main.add_command(cli_replay.replay)
main.add_command(reaper.main)
cli_usage.add_to(main, lambda: _db_url())


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply the Alembic revisions in migrations/."""
    from workers.store.migrate import upgrade

    upgrade(_db_url(), revision)
    click.echo(f"database at {revision}")


@main.group()
def customers() -> None:
    """Customers and their tiers."""


@customers.command("create")
@click.argument("name")
@click.option("--tier", default="free", show_default=True)
def customers_create(name: str, tier: str) -> None:
    with session_scope(_db_url()) as s:
        c = _guard(lambda: service.create_customer(s, name, tier))
        click.echo(f"customer {c.name} ({c.id}) on tier {c.tier}")


@customers.command("list")
def customers_list() -> None:
    with session_scope(_db_url()) as s:
        for c in s.execute(select(Customer).order_by(Customer.created_at)).scalars():
            click.echo(f"{c.name}\t{c.tier}\t{c.id}\t{'disabled' if c.disabled else 'active'}")


@customers.command("set-tier")
@click.argument("name")
@click.argument("tier")
def customers_set_tier(name: str, tier: str) -> None:
    with session_scope(_db_url()) as s:
        c = _guard(lambda: service.set_tier(s, name, tier))
        click.echo(f"customer {c.name} now on tier {c.tier}")


@main.group()
def keys() -> None:
    """API keys (shown once, stored as HMAC digests)."""


@keys.command("create")
@click.option("--customer", "customer_name", required=True)
@click.option("--name", default="default", show_default=True)
@click.option("--expires-in-days", type=int, default=None)
@click.option("--create-customer/--no-create-customer", default=False, help="create the customer if missing")
def keys_create(customer_name: str, name: str, expires_in_days: int | None, create_customer: bool) -> None:
    expires = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    with session_scope(_db_url()) as s:
        try:
            customer = service.get_customer(s, customer_name)
        except service.AccountError:
            if not create_customer:
                raise click.ClickException(f"no customer {customer_name!r} (use --create-customer)") from None
            customer = service.create_customer(s, customer_name)
        key, plaintext = service.create_key(s, customer, get_settings().api_key_pepper, name=name, expires_at=expires)
    click.echo(plaintext)
    click.echo(f"(prefix {key.prefix}; this key is shown once and cannot be recovered)", err=True)


@keys.command("list")
@click.option("--customer", "customer_name", required=True)
def keys_list(customer_name: str) -> None:
    with session_scope(_db_url()) as s:
        customer = _guard(lambda: service.get_customer(s, customer_name))
        for k in s.execute(select(ApiKey).where(ApiKey.customer_id == customer.id)).scalars():
            expiry = "expires " + k.expires_at.isoformat() if k.expires_at else "active"
            status = "revoked" if k.revoked_at else expiry
            click.echo(f"{k.prefix}\t{k.name}\tcreated {k.created_at:%Y-%m-%d}\tlast used {k.last_used_at}\t{status}")


@keys.command("revoke")
@click.argument("prefix")
def keys_revoke(prefix: str) -> None:
    with session_scope(_db_url()) as s:
        k = _guard(lambda: service.revoke_key(s, prefix))
        click.echo(f"revoked {k.prefix}")


@keys.command("rotate")
@click.argument("prefix")
@click.option("--grace-hours", type=float, default=24.0, show_default=True, help="how long the old key keeps working")
def keys_rotate(prefix: str, grace_hours: float) -> None:
    with session_scope(_db_url()) as s:
        key, plaintext = _guard(lambda: service.rotate_key(s, prefix, get_settings().api_key_pepper,
                                                           grace=timedelta(hours=grace_hours)))
    click.echo(plaintext)
    click.echo(f"(new prefix {key.prefix}; the old key stops working in {grace_hours} h)", err=True)


@main.group()
def models() -> None:
    """Model checkpoints."""


@models.command("build-tiny")
@click.argument("out_dir", type=click.Path(path_type=Path))
def models_build_tiny(out_dir: Path) -> None:
    """Write the tiny random-weight checkpoints (real formats) that tests and `make run` load."""
    from workers.policies.presets import build_tiny_checkpoints

    for name, path in build_tiny_checkpoints(out_dir).items():
        click.echo(f"{name}\t{path}")


@models.command("register")
@click.argument("ckpt_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="write the fingerprint here (default: $FINGERPRINT_DIR/<dir name>.json, else beside the weights)")
@click.option("--dtype", default="float32", show_default=True, help="dtype of the recorded outputs "
              "(register again with the serving dtype to add a tighter record)")
@click.option("--device", default="cpu", show_default=True, help="device of the recorded outputs (cpu, cuda)")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="checkpoint option (asset_id=...)")
def models_register(ckpt_dir: Path, out: Path | None, dtype: str, device: str, options: tuple[str, ...]) -> None:
    """Fingerprint a checkpoint: tensor digests and the outputs of fixed inputs, checked by every worker."""
    from workers.policies.errors import PolicyError
    from workers.policies.register import register

    opts = dict(o.partition("=")[::2] for o in options)
    try:
        path = register(ckpt_dir, out=out, fingerprint_dir=get_settings().fingerprint_dir, dtype=dtype,
                        device=device, options=opts)
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(str(path))


def _guard(fn):
    try:
        return fn()
    except service.AccountError as exc:
        raise click.ClickException(str(exc)) from None

