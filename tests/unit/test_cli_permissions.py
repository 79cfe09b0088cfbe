"""``ebind permissions`` prints the frozen sets for a user, without a server."""

from __future__ import annotations

import json

from click.testing import CliRunner

from ebind.cli import main
from ebind.permissions import permissions_block, producer, worker


def test_prints_the_users_entry_and_the_settings_its_processes_need() -> None:
    result = CliRunner().invoke(
        main, ["permissions", "producer", "--user", "orders", "--client-id", "orders-api"]
    )
    assert result.exit_code == 0, result.output
    want = producer(inbox_prefix="_INBOX_orders", client_id="orders-api")
    assert result.stdout.splitlines() == [
        "# user 'orders': its processes run with EBIND_NATS_INBOX_PREFIX=_INBOX_orders "
        "EBIND_CLIENT_ID=orders-api",
        permissions_block(want),
    ]


def test_json_output_holds_the_allow_lists() -> None:
    result = CliRunner().invoke(main, ["--json", "permissions", "worker", "--user", "w1"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert got == {
        "user": "w1",
        "env": {"EBIND_NATS_INBOX_PREFIX": "_INBOX_w1"},
        **worker(inbox_prefix="_INBOX_w1").to_dict(),
    }


def test_dags_adds_the_dag_bucket_writes() -> None:
    result = CliRunner().invoke(main, ["permissions", "producer", "--user", "p", "--dags"])
    assert result.exit_code == 0, result.output
    assert '"$KV.ebind-dags.>"' in result.stdout
    assert '"RESP.p.>"' in result.stdout  # the client id defaults to the user name


def test_a_bad_user_name_is_one_error_line() -> None:
    result = CliRunner().invoke(main, ["permissions", "worker", "--user", "a.b"])
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: invalid user name 'a.b': character '.' (U+002E) is not allowed; "
        "use letters, digits, '-' and '_'\n"
    )
