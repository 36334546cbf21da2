"""The artifact catalog: every file a run writes is declared with its stage and format, and nothing else is written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sklearn.preprocessing import StandardScaler

from core.framework import artifacts, catalog, paths
from core.framework.errors import PipelineError
from core.framework.stage import Stage, StageContext
from core.pipeline import all_stages, show_stage
from test_pipeline import pipeline_run  # noqa: F401 - pipeline_run: the session's finished run


def sniffed_format(path: Path) -> str:
    """A file's format told from its bytes alone, not from the catalog or the suffix."""
    data = path.read_bytes()
    if data[:4] == b"PAR1" and data[-4:] == b"PAR1":
        return "parquet"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"PK\x03\x04"):  # a zip archive: how Keras 3 saves a model
        return "keras"
    if data.startswith(b"\x80"):  # a pickle's protocol opcode: joblib writes plain pickles
        return "joblib"
    text = data.decode("utf-8")
    if text.lstrip().lower().startswith("<!doctype html"):
        return "html"
    try:
        json.loads(text)
        return "json"
    except json.JSONDecodeError:
        pass
    try:
        if isinstance(yaml.safe_load(text), dict):
            return "yaml"
    except yaml.YAMLError:  # a CSV line may hold "name: value" after a comma
        pass
    pd.read_csv(path)  # a header line and rows, or fails
    return "csv"


def context(tmp_path: Path, stage: str = paths.CLUSTER, inputs: dict | None = None,
            records: list | None = None) -> StageContext:
    return StageContext(stage=Stage(name=stage, inputs=inputs or {}, description="test"), config=None,
                        artifacts_dir=tmp_path, inputs=records or [])


# --- a finished run ---------------------------------------------------------------


def test_every_file_a_finished_run_writes_is_declared_with_its_stage_and_format(pipeline_run):
    _, artifacts_dir = pipeline_run
    seen_formats = set()
    for stage in paths.STAGE_NAMES:
        folder = paths.stage_dir(artifacts_dir, stage)
        files = sorted(p.name for p in folder.iterdir())
        assert paths.MANIFEST in files and len(files) > 1, stage
        for file in files:
            entry = catalog.find(stage, file)
            assert entry is not None, f"{stage}/{file} is not in the catalog"
            assert entry.stage == (None if file == paths.MANIFEST else stage), (stage, file)
            assert entry.format == sniffed_format(folder / file), (stage, file)
            seen_formats.add(entry.format)
    assert seen_formats == set(catalog.FORMATS) - {"text"}, "the run writes every format but plain text"


def test_the_declared_reader_reads_every_output_of_a_finished_run(pipeline_run):
    _, artifacts_dir = pipeline_run
    for stage in paths.STAGE_NAMES:
        manifest = artifacts.read_manifest(paths.stage_dir(artifacts_dir, stage))
        for record in manifest["outputs"]:
            entry = catalog.find(stage, record["file"])
            if catalog.FORMATS[entry.format].read is None:
                continue
            value = catalog.read_output(artifacts_dir, stage, record["file"])
            if entry.format in ("parquet", "csv"):
                assert len(value) == record["rows"], (stage, record["file"])
            else:
                assert value is not None, (stage, record["file"])


def test_show_prints_each_output_s_format_and_description(pipeline_run):
    _, artifacts_dir = pipeline_run
    for stage in paths.STAGE_NAMES:
        out = show_stage(stage, artifacts_dir, rows=2)
        for record in artifacts.read_manifest(paths.stage_dir(artifacts_dir, stage))["outputs"]:
            entry = catalog.find(stage, record["file"])
            assert f"  {record['file']}  {entry.format}  " in out, (stage, record["file"])
            assert entry.description in out, (stage, record["file"])
    out = show_stage(paths.PROFILE_EXPORT, artifacts_dir, rows=2)
    assert "== segment_profiles.yaml: first 8 lines" in out and "== cluster_insights.csv: " in out
    assert "== report.html" not in out and "== loss-curve.png" not in out, "only tables, JSON and YAML are shown"


# --- the catalog itself ---------------------------------------------------------


def test_every_declared_input_is_a_declared_output_of_its_stage():
    for stage in all_stages():
        for upstream, files in stage.inputs.items():
            for file in files:
                entry = catalog.find(upstream, file)
                assert entry is not None and entry.stage == upstream, (stage.name, upstream, file)


def test_each_file_name_has_one_entry_and_a_known_stage_and_format():
    names = [paths.membership_file("gmm", "latent"), paths.cluster_model_file("kmeans", "raw"),
             paths.extra_export_file(paths.SEGMENT_PROFILES_JSON, "kmeans_latent"),
             paths.extra_export_file(paths.CLUSTER_INSIGHTS, "gmm_raw")]
    names += [a.name for a in catalog.ARTIFACTS if not a.is_pattern]
    for entry in catalog.ARTIFACTS:
        assert entry.stage in (*paths.STAGE_NAMES, None) and entry.format in catalog.FORMATS, entry
        assert entry.description and "\n" not in entry.description, entry
    for stage in paths.STAGE_NAMES:
        for name in names:
            matching = [a for a in catalog.ARTIFACTS if a.stage in (stage, None) and a.matches(name)]
            assert len(matching) <= 1, (stage, name, matching)
    assert catalog.find(paths.CLUSTER, "membership-gmm-latent.parquet").name == "membership-{method}-{space}.parquet"
    assert catalog.find(paths.PROFILE_EXPORT, "segment_profiles__kmeans_latent.yaml").format == "yaml"
    assert catalog.find(paths.CLUSTER, "membership-gmm-latent.csv") is None
    assert catalog.find(paths.PREPARE_FEATURES, "kmeans-raw.pkl") is None, "a pattern belongs to its own stage"


def test_files_whose_loading_runs_code_are_verified_and_hashed_in_full_by_status():
    for entry in catalog.ARTIFACTS:
        if catalog.FORMATS[entry.format].verified:
            assert Path(entry.name).suffix in artifacts.LOADABLE_SUFFIXES, entry


# --- writes through the stage context ------------------------------------------------


def test_a_write_the_catalog_does_not_declare_for_the_stage_raises_and_writes_nothing(tmp_path):
    ctx = context(tmp_path)
    with pytest.raises(PipelineError, match=r"04_cluster writes partial.txt, which the artifact catalog "
                                            r"\(core/framework/catalog.py\) does not declare"):
        ctx.write_text("partial.txt", "never written")
    with pytest.raises(PipelineError, match="does not declare"):
        ctx.write_parquet(paths.FEATURES, pd.DataFrame({"a": [1]}))  # stage 02's file
    with pytest.raises(PipelineError, match="does not declare"):
        ctx.write_with("kmeans-raw.parquet", lambda tmp: tmp.write_bytes(b"x"))
    with pytest.raises(PipelineError, match="writes manifest.json, which is the runner's"):
        ctx.write_json(paths.MANIFEST, {})
    assert not ctx.output_dir.exists() or not any(ctx.output_dir.iterdir())
    assert ctx.outputs == {}


def test_a_table_encoded_ahead_is_written_byte_for_byte_as_write_parquet_writes_it(tmp_path):
    frame = pd.DataFrame({"customer_id": ["C001", "00123", "x"], "segment": [2, 0, 1], "share": [0.5, 0.25, 1.0]})
    direct, ahead = context(tmp_path / "direct"), context(tmp_path / "ahead")
    direct.write_parquet(paths.ASSIGNMENTS, frame)
    data = ahead.parquet_bytes(paths.ASSIGNMENTS, frame)
    assert not ahead.output_dir.exists() or not any(ahead.output_dir.iterdir())  # encoded, nothing written yet
    ahead.write_bytes(paths.ASSIGNMENTS, data)
    assert (ahead.output_dir / paths.ASSIGNMENTS).read_bytes() == (direct.output_dir / paths.ASSIGNMENTS).read_bytes()
    assert ahead.outputs == direct.outputs
    with pytest.raises(PipelineError, match="does not declare"):
        ahead.parquet_bytes(paths.FEATURES, frame)  # stage 02's file
    with pytest.raises(PipelineError, match=r"as parquet, but .* declares it as csv"):
        ahead.parquet_bytes(paths.MIGRATION, frame)


def test_a_table_encoded_with_dictionaries_and_statistics_for_some_columns_reads_back_the_same(tmp_path):
    import io

    import pyarrow.parquet as pq

    frame = pd.DataFrame({"customer_id": ["C001", "00123", "x", "C001"], "rank": [1, 2, 1, 2],
                          "reason": ["buys again", "buys again", "popular in segment", "buys again"],
                          "score": [0.5, 0.25, 1.0, 0.125]})
    ctx = context(tmp_path)
    data = ctx.parquet_bytes(paths.ASSIGNMENTS, frame, dictionary=["reason"], statistics=["customer_id", "rank"])
    pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(data)), pd.read_parquet(
        io.BytesIO(ctx.parquet_bytes(paths.ASSIGNMENTS, frame))))
    group = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0)
    column = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    assert "RLE_DICTIONARY" in column["reason"].encodings
    assert not {"RLE_DICTIONARY", "PLAIN_DICTIONARY"} & set(column["score"].encodings + column["customer_id"].encodings)
    assert column["customer_id"].statistics.has_min_max and column["rank"].statistics.has_min_max
    assert column["score"].statistics is None or not column["score"].statistics.has_min_max

def test_a_write_in_another_format_than_declared_raises(tmp_path):
    ctx = context(tmp_path)
    with pytest.raises(PipelineError, match=r"writes assignments.parquet as csv, but .* declares it as parquet"):
        ctx.write_csv(paths.ASSIGNMENTS, pd.DataFrame({"a": [1]}))
    with pytest.raises(PipelineError, match=r"writes migration.csv as text, but .* declares it as csv"):
        ctx.write_text(paths.MIGRATION, "a\n1\n")
    with pytest.raises(PipelineError, match=r"encoder.keras \(keras\) has no generic writer"):
        context(tmp_path, paths.TRAIN_AUTOENCODER).write(paths.ENCODER_MODEL, object())
    assert ctx.outputs == {}


def test_write_dispatches_on_the_declared_format(tmp_path):
    ctx = context(tmp_path)
    ctx.write(paths.COMPARISON, pd.DataFrame({"method": ["kmeans", "gmm"], "clusters": [4, 5]}))
    ctx.write(paths.COMPARISON_JSON, {"primary": {"method": "kmeans", "space": "latent"}})
    ctx.write(paths.ASSIGNMENTS, pd.DataFrame({"customer_id": [7, 8], "segment": [0, 1]}))
    folder = ctx.output_dir
    assert (folder / paths.COMPARISON).read_bytes() == b"method,clusters\nkmeans,4\ngmm,5\n"
    assert (folder / paths.COMPARISON_JSON).read_bytes() == (
        b'{\n  "primary": {\n    "method": "kmeans",\n    "space": "latent"\n  }\n}\n')
    assert pd.read_parquet(folder / paths.ASSIGNMENTS)["segment"].tolist() == [0, 1]
    assert ctx.outputs == {f: hashlib.sha256((folder / f).read_bytes()).hexdigest()
                           for f in (paths.COMPARISON, paths.COMPARISON_JSON, paths.ASSIGNMENTS)}


def test_read_uses_the_declared_format_and_verifies_a_pickle(tmp_path):
    writer = context(tmp_path, paths.PREPARE_FEATURES)
    writer.write(paths.FEATURE_SCALER, StandardScaler().fit([[0.0], [2.0]]))
    writer.write(paths.FEATURES, pd.DataFrame({"customer_id": [1, 2], "x": [0.5, 1.5]}))
    scaler = paths.stage_dir(tmp_path, paths.PREPARE_FEATURES) / paths.FEATURE_SCALER
    records = [{"stage": paths.PREPARE_FEATURES, **artifacts.describe_file(scaler)}]
    reader = context(tmp_path, paths.CLUSTER, {paths.PREPARE_FEATURES: (paths.FEATURE_SCALER, paths.FEATURES)},
                     records)
    assert reader.read(paths.PREPARE_FEATURES, paths.FEATURE_SCALER).mean_.tolist() == [1.0]
    assert reader.read(paths.PREPARE_FEATURES, paths.FEATURES, columns=["x"]).columns.tolist() == ["x"]
    with pytest.raises(PipelineError, match=r"reads 02_prepare_features/features.parquet as json, but the "
                                            r"artifact catalog declares it as parquet"):
        reader.read_json(paths.PREPARE_FEATURES, paths.FEATURES)
    scaler.write_bytes(scaler.read_bytes() + b"\0")
    with pytest.raises(PipelineError, match="feature-scaler.pkl is not the file stage 02_prepare_features wrote"):
        reader.read(paths.PREPARE_FEATURES, paths.FEATURE_SCALER)


# --- the formats ---------------------------------------------------------------------


ROUND_TRIPS = {
    "parquet": pd.DataFrame({"customer_id": pd.array([1, None], dtype="Int64"), "name": ["Åsa", "Bo"],
                             "spend": [12.5, 0.0], "day": pd.to_datetime(["2024-01-02", "2024-03-04"])}),
    "csv": pd.DataFrame({"segment": [0, 1], "name": ["Value, seekers", "Ünique"], "share": [0.25, 0.75]}),
    "json": {"primary": {"method": "kmeans"}, "sizes": [3, 4], "note": "naïve", "missing": None},
    "yaml": {"segments": [{"id": 0, "name": "Café regulars"}], "ratio": 0.5, "flag": True},
    "html": "<!DOCTYPE html>\n<p>Café</p>\n",
    "text": "line one\nline two\n",
}


@pytest.mark.parametrize("format", sorted(ROUND_TRIPS))
def test_each_format_reads_back_what_it_wrote(tmp_path, format):
    value, target = ROUND_TRIPS[format], tmp_path / f"file.{format}"
    catalog.FORMATS[format].write(value, target)
    back = catalog.read_file(target, format)
    if isinstance(value, pd.DataFrame):
        pd.testing.assert_frame_equal(back, value)
    else:
        assert back == value


def test_joblib_reads_back_only_through_verification(tmp_path):
    target = tmp_path / "model.pkl"
    catalog.FORMATS["joblib"].write(StandardScaler().fit([[1.0], [3.0]]), target)
    sha256 = hashlib.sha256(target.read_bytes()).hexdigest()
    assert catalog.read_file(target, "joblib", sha256=sha256, stage=paths.CLUSTER).mean_.tolist() == [2.0]
    with pytest.raises(PipelineError, match="is not listed in the manifest of stage 04_cluster"):
        catalog.read_file(target, "joblib", stage=paths.CLUSTER)
    with pytest.raises(PipelineError, match="is not the file stage 04_cluster wrote"):
        catalog.read_file(target, "joblib", sha256="0" * 64, stage=paths.CLUSTER)


@pytest.mark.parametrize("format", ["keras", "png"])
def test_formats_opened_by_their_stage_s_code_have_no_generic_reader(tmp_path, format):
    with pytest.raises(PipelineError, match=f"\\({format}\\) has no generic reader: it is opened by"):
        catalog.read_file(tmp_path / f"file.{format}", format)
