"""``ebind permissions``: print the NATS permissions of a producer, worker or operator user."""

from __future__ import annotations

import click

from ebind.cli.output import emit, json_option
from ebind.errors import EbindError

__all__ = ["permissions"]


@click.command("permissions")
@click.argument("role", type=click.Choice(["producer", "worker", "operator"]))
@click.option(
    "--user", required=True, help="The NATS user name (its inbox prefix is _INBOX_<user>)."
)
@click.option(
    "--client-id",
    default=None,
    help="A producer's fixed client id (App(client_id=) / EBIND_CLIENT_ID); default: the user.",
)
@click.option("--dags", is_flag=True, help="A producer that also submits DAGs and sends signals.")
@json_option
@click.pass_context
def permissions(
    ctx: click.Context, role: str, user: str, client_id: str | None, dags: bool
) -> None:
    """Print the least-privilege permissions of ROLE for a nats-server user entry.

    Needs no server: the sets are the ones docs/security.md lists.
    """
    from ebind.permissions import inbox_prefix_for, permissions_block, permissions_for

    try:
        prefix = inbox_prefix_for(user)
        perms = permissions_for(role, inbox_prefix=prefix, client_id=client_id or user, dags=dags)
    except EbindError as exc:
        raise click.ClickException(str(exc)) from None
    settings = {"EBIND_NATS_INBOX_PREFIX": prefix}
    if role == "producer":
        settings["EBIND_CLIENT_ID"] = client_id or user

    def render(_: object) -> None:
        env = " ".join(f"{k}={v}" for k, v in settings.items())
        click.echo(f"# user {user!r}: its processes run with {env}")
        click.echo(permissions_block(perms))

    emit(ctx, perms, render, lambda p: {"user": user, "env": settings, **p.to_dict()})
