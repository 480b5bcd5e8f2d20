"""`stride tokens issue|list|revoke` end to end, as an operator runs them."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime

import psycopg

from tests.api.conftest import STRIDE, add_user


def stride(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STRIDE, "tokens", *args, "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_issue_list_revoke(database_url: str) -> None:
    user = add_user(database_url)
    plain = stride("issue", "--user", str(user), database_url=database_url)
    assert plain.returncode == 0, plain.stderr
    token = plain.stdout.strip()
    assert token.startswith("stride_") and "\n" not in token  # stdout is the token alone
    assert "shown once" in plain.stderr

    issued = stride(
        "issue",
        "--user",
        str(user),
        "--operator",
        "--expires",
        "12h",
        "--json",
        database_url=database_url,
    )
    document = json.loads(issued.stdout)
    assert document["operator"] is True and document["state"] == "active"
    expires = datetime.fromisoformat(document["expires_at"])
    assert 11.9 * 3600 < (expires - datetime.now(UTC)).total_seconds() <= 12 * 3600
    never = json.loads(
        stride(
            "issue", "--user", str(user), "--expires", "never", "--json", database_url=database_url
        ).stdout
    )
    assert never["expires_at"] is None

    # Only a digest is stored: the secret appears nowhere in the database.
    with psycopg.connect(database_url) as conn:
        dump = str(conn.execute("SELECT array_agg(t::text) FROM api_tokens t").fetchone())
    assert token.rsplit("_", 1)[1] not in dump and document["token"][-43:] not in dump

    revoked = stride("revoke", document["id"], database_url=database_url)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    again = stride("revoke", document["id"], database_url=database_url)
    assert again.returncode == 0 and "already revoked" in again.stdout
    unknown = stride("revoke", "0123456789abcdef", database_url=database_url)
    assert unknown.returncode == 1 and "no token" in unknown.stderr

    listed = json.loads(stride("list", "--json", database_url=database_url).stdout)
    states = {t["id"]: t["state"] for t in listed}
    assert states[document["id"]] == "revoked"
    assert sorted(states.values()) == ["active", "active", "revoked"]
    assert all("token" not in t and "secret" not in json.dumps(t) for t in listed)
    table = stride("list", database_url=database_url)
    assert table.returncode == 0 and "revoked" in table.stdout


def test_issue_refuses_bad_input(database_url: str) -> None:
    missing = stride(
        "issue", "--user", "01a228fa-6a76-7000-b52d-5861441a84ca", database_url=database_url
    )
    assert missing.returncode == 1 and "no user" in missing.stderr
    assert stride("issue", "--user", "bob", database_url=database_url).returncode == 2
    user = str(add_user(database_url))
    for expires in ("soon", "0s", "-1d"):
        bad = stride("issue", "--user", user, "--expires", expires, database_url=database_url)
        assert bad.returncode == 2, (expires, bad.stderr)
        assert "--expires" in bad.stderr
    assert json.loads(stride("list", "--json", database_url=database_url).stdout) == []
