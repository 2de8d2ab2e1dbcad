"""The workflow's second config, configs/example-shared-data.yaml, on the real data.

Monaco's 2016 extract with a (smaller) simulated fleet, and two real Kubicka drives on their
own road networks, in one run; the real drives' coverage is checked against their
hand-corrected ground-truth routes.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
import yaml

from pipeline.cli import main
from tests.workflow.running import REPO_ROOT

CONFIG = REPO_ROOT / "configs" / "example-shared-data.yaml"
KEY_ENV = "ROADCOVER_PSEUDONYM_KEY"


def shared_data_config(shared_data: Path, workdir: Path) -> Path:
    """The example config with its ../shared/data paths pointed at ``shared_data``."""
    text = CONFIG.read_text(encoding="utf-8").replace("../shared/data", str(shared_data))
    config = yaml.safe_load(text)
    config["output_dir"] = str(workdir / "results")
    config["simulate"].update(devices=3, days=2)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def truth_km(drive_dir: Path) -> float:
    feature = json.loads((drive_dir / "truth.geojson").read_text())
    truth = gpd.GeoSeries([shapely.geometry.shape(feature["geometry"])], crs="EPSG:4326")
    return float(truth.to_crs(truth.estimate_utm_crs()).length.iloc[0] / 1000.0)


@pytest.mark.shared_data
def test_example_config_on_real_data(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "shared-data-test-key-not-a-secret")
    config = shared_data_config(shared_data, tmp_path)
    # one thread for ingest and matching: in-process, without a Dask LocalCluster to start
    threads = ["--set-threads", "ingest_traces=1", "match_traces=1"]
    run = ["run", "--config", str(config), "--cores", "2", *threads, "--directory", str(tmp_path)]
    assert main(run) == 0
    results = tmp_path / "results"
    combined = json.loads((results / "summary.json").read_text())
    assert set(combined["regions"]) == {"monaco", "kubicka-05", "kubicka-07"}
    regions = combined["regions"]
    assert sum(r["unique_km"] for r in regions.values()) == pytest.approx(
        combined["all_regions"]["unique_km"], rel=1e-9
    )
    assert 0 < regions["monaco"]["unique_km"] <= regions["monaco"]["road_km"]
    for name in ("kubicka-05", "kubicka-07"):
        drive_dir = shared_data / "mapmatch" / "kubicka-dev" / f"0000000{name[-1]}"
        summary = regions[name]
        # the whole drive is covered but for the privacy trims of its trips' ends (200 m each):
        # measured 30.05 of 30.88 km (00000005) and 21.52 of 22.17 km (00000007)
        assert truth_km(drive_dir) * 0.93 <= summary["unique_km"] <= truth_km(drive_dir) * 1.02
        release = json.loads((results / name / "export/releases/latest.json").read_text())
        assert (Path(release["path"]) / "manifest.json").exists()  # absolute: so is output_dir
