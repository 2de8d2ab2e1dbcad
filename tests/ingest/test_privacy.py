"""Keyed pseudonyms: stable under one key, unlinkable without it, never the raw id."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import settings_from_mapping
from pipeline.errors import ConfigError
from pipeline.ingest.privacy import load_pseudonym_key, pseudonym, pseudonymize

KEY = b"0123456789abcdef-test-key"


def ingest_settings(**ingest: object) -> object:
    return settings_from_mapping(
        {"regions": [{"name": "t", "osm": "t.osm"}], "ingest": ingest}
    ).ingest


def test_pseudonyms_are_stable_per_key_and_hide_the_raw_value() -> None:
    values = np.array(["alice", "bob", "alice"], dtype=object)
    first = pseudonymize(KEY, values, 3)
    assert first[0] == first[2] != first[1]
    assert first.tolist() == pseudonymize(KEY, values, 3).tolist()
    assert pseudonymize(b"another-secret-key-123", values, 3)[0] != first[0]
    assert all(len(p) == 16 and "alice" not in p for p in first)
    assert first[0] == pseudonym(KEY, "alice")
    assert pseudonymize(KEY, "alice", 2).tolist() == [first[0]] * 2  # one id for every row


def test_key_from_environment_or_file(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("MY_KEY", "a-secret-from-the-env")
    assert (
        load_pseudonym_key(ingest_settings(pseudonym_key_env="MY_KEY")) == b"a-secret-from-the-env"
    )
    key_file = tmp_path / "key"
    key_file.write_text("a-secret-from-a-file\n")
    monkeypatch.delenv("MY_KEY")
    settings = ingest_settings(pseudonym_key_env="MY_KEY", pseudonym_key_file=str(key_file))
    assert load_pseudonym_key(settings) == b"a-secret-from-a-file"


def test_missing_or_short_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROADCOVER_PSEUDONYM_KEY", raising=False)
    with pytest.raises(ConfigError, match="set the environment variable ROADCOVER_PSEUDONYM_KEY"):
        load_pseudonym_key(ingest_settings())
    monkeypatch.setenv("ROADCOVER_PSEUDONYM_KEY", "short")
    with pytest.raises(ConfigError, match="shorter than 16 bytes"):
        load_pseudonym_key(ingest_settings())
