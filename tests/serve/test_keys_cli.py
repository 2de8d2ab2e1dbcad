"""``roadcover keys create|list|revoke`` and ``roadcover credits add``, run as real processes.

Each test runs the CLI in a subprocess on a SQLite file in tmp_path and checks its effect
through :class:`~pipeline.serve.accounts.AccountStore` or the printed lines.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from pipeline.serve.accounts import AccountStore, AuthenticationError

TIMEOUT_S = 120


def _roadcover(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "ROADCOVER_DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        env={**environment, **(env or {})},
    )


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'accounts.sqlite'}"


def _printed(stdout: str) -> dict[str, str]:
    return dict(
        (name.strip(), value.strip())
        for name, _, value in (line.partition(":") for line in stdout.splitlines())
    )


def test_keys_create_prints_a_working_key_once(url: str, tmp_path: Path) -> None:
    aoi = tmp_path / "aoi.geojson"
    square = [[[9.5, 47.0], [9.6, 47.0], [9.6, 47.1], [9.5, 47.1], [9.5, 47.0]]]
    polygon = {"type": "Polygon", "coordinates": square}
    aoi.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": polygon}))
    result = _roadcover(
        "keys", "create", "--org", "acme", "--credits", "250.5", "--regions", "demo,li",
        "--aoi", str(aoi), "--expires", "2099-12-31", "--database-url", url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = _printed(result.stdout)
    assert printed["org"] == "acme" and printed["balance"] == "250.500000 credits"
    secret = printed["secret"]
    assert secret.startswith(printed["key id"] + ".")
    scheme, _, token = printed["header"].removeprefix("Authorization: ").partition(" ")
    assert (scheme, base64.b64decode(token).decode()) == ("Basic", f"acme:{secret}")
    account = AccountStore(url).authenticate("acme", secret)
    assert account.regions == ("demo", "li") and str(account.expires) == "2099-12-31"
    assert account.aoi is not None and account.aoi.bounds == pytest.approx((9.5, 47.0, 9.6, 47.1))
    listed = _roadcover("keys", "list", "--database-url", url)
    assert listed.returncode == 0 and secret.split(".")[1] not in listed.stdout


def test_keys_list_revoke_and_credits_add(url: str) -> None:
    store = AccountStore(url)
    kept, revoked = store.create_key("acme"), store.create_key("acme")
    other = store.create_key("beta", credits=Decimal(1))
    result = _roadcover("keys", "revoke", revoked.key_id, "--database-url", url)
    assert result.returncode == 0 and revoked.key_id in result.stdout
    with pytest.raises(AuthenticationError, match="revoked"):
        store.authenticate("acme", revoked.secret)
    listed = _roadcover("keys", "list", "--org", "acme", "--database-url", url)
    rows = [line.split("\t") for line in listed.stdout.splitlines()[1:]]
    assert sorted((row[0], row[1], row[2]) for row in rows) == sorted(
        [(kept.key_id, "acme", "active"), (revoked.key_id, "acme", "revoked")]
    )
    assert other.key_id not in listed.stdout
    added = _roadcover("credits", "add", "--org", "beta", "2.25", "--database-url", url)
    assert added.returncode == 0 and "balance 3.250000" in added.stdout
    assert store.balance("beta") == Decimal("3.25")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["keys", "create", "--org", "acme", "--expires", "2027-02-30"], "'2027-02-30' is not a"),
        (["keys", "create", "--org", "acme", "--credits", "-3"], "credits -3 must be 0 or more"),
        (["keys", "create", "--org", "acme", "--credits", "lots"], "credits 'lots' is not a"),
        (["keys", "create", "--org", "acme", "--aoi", "POINT"], "a 'Point' geometry"),
        (["keys", "create", "--org", "acme", "--aoi", "MISSING"], "file not found"),
        (["keys", "create", "--org", "acme", "--aoi", "NOTJSON"], "not valid GeoJSON"),
        (["keys", "create", "--org", "a:b"], "organisation id 'a:b'"),
        (["keys", "revoke", "rk_0000000000000000"], "no key with id 'rk_0000000000000000'"),
        (["credits", "add", "--org", "acme", "-5"], "credits -5 must be more than 0"),
        (["credits", "add", "--org", "ghost", "5"], "no organisation 'ghost'"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_1(
    url: str, tmp_path: Path, args: list[str], words: str
) -> None:
    AccountStore(url).create_key("acme")
    (tmp_path / "POINT").write_text('{"type": "Point", "coordinates": [1, 2]}')
    (tmp_path / "NOTJSON").write_text("{nope")
    args = [str(tmp_path / a) if a in ("POINT", "MISSING", "NOTJSON") else a for a in args]
    result = _roadcover(*args, "--database-url", url)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("roadcover: error: ")
    assert words in result.stderr
    assert "Traceback" not in result.stderr


def test_the_database_comes_from_env_config_or_output_dir(tmp_path: Path) -> None:
    regions = [{"name": "demo", "osm": "x.osm"}]
    default_config = tmp_path / "default.yaml"
    default_config.write_text(
        yaml.safe_dump({"regions": regions, "output_dir": str(tmp_path / "out")})
    )
    chosen = tmp_path / "chosen.sqlite"
    chosen_config = tmp_path / "chosen.yaml"
    chosen_config.write_text(
        yaml.safe_dump({"regions": regions, "api": {"database_url": f"sqlite:///{chosen}"}})
    )
    from_env = tmp_path / "env.sqlite"
    create = ["keys", "create", "--org", "acme", "--config"]
    assert _roadcover(*create, str(default_config)).returncode == 0
    assert (tmp_path / "out" / "api" / "accounts.sqlite").exists()
    assert _roadcover(*create, str(chosen_config)).returncode == 0
    assert len(AccountStore(f"sqlite:///{chosen}").list_keys()) == 1
    env = {"ROADCOVER_DATABASE_URL": f"sqlite:///{from_env}"}
    assert _roadcover(*create, str(chosen_config), env=env).returncode == 0
    assert len(AccountStore(f"sqlite:///{from_env}").list_keys()) == 1
    assert len(AccountStore(f"sqlite:///{chosen}").list_keys()) == 1
