"""What a Windows user's files look like, exercised on Linux: CRLF line ends, paths with spaces and accents.

Excel and Notepad on Windows write CSV with CRLF line ends, and Windows
profiles put projects under folders such as ``C:\\Users\\Zoë Smith\\My
Documents``. The pipeline must read such a log exactly as the LF version and
keep such paths intact in its manifests.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd

from conftest import write_config
from core.framework import paths
from test_ingest import file_document, real_shaped_log


def _log_text(n_customers: int = 40) -> str:
    return real_shaped_log(n_customers, seed=3).to_csv(index=False, lineterminator="\n")


def _run_stage_01(folder, text: bytes):
    """Stage 01 through the real command line on ``text`` as the log, in ``folder``; (exit code, transactions)."""
    columns = {"Customer": "customer_id", "Date": "order_date", "Total": "line_amount"}
    document = file_document(folder, "", columns, date_format="%d/%m/%Y", max_rejected_share=0.0)
    (folder / "config" / "log.csv").write_bytes(text)
    config = write_config(folder / "config", document)
    artifacts = folder / "artefacts de Zoë"
    result = subprocess.run([sys.executable, "-m", "core.pipeline", "run", "--only", "1", "--config", str(config),
                             "--artifacts", str(artifacts)], cwd=paths.REPO_ROOT, capture_output=True, text=True,
                            timeout=300)
    stage = paths.stage_dir(artifacts, paths.GENERATE_DATA)
    transactions = pd.read_parquet(stage / paths.TRANSACTIONS) if result.returncode == 0 else None
    return result, transactions, stage


def test_a_crlf_log_in_a_folder_with_spaces_and_accents_reads_like_the_lf_one(tmp_path):
    text = _log_text()
    lf_result, lf_lines, _ = _run_stage_01(tmp_path / "lf", text.encode("utf-8"))
    crlf_result, crlf_lines, stage = _run_stage_01(tmp_path / "Zoë Smith" / "My Documents",
                                                   text.replace("\n", "\r\n").encode("utf-8"))
    assert lf_result.returncode == 0, lf_result.stderr
    assert crlf_result.returncode == 0, crlf_result.stderr
    assert len(crlf_lines) == len(lf_lines) == text.count("\n") - 1  # every row accepted; no rejects allowed
    pd.testing.assert_frame_equal(crlf_lines, lf_lines)
    manifest = json.loads((stage / paths.MANIFEST).read_text(encoding="utf-8"))
    recorded = manifest["source_files"][0]["file"]
    assert "Zoë Smith" in recorded and "My Documents" in recorded
    assert (tmp_path / "Zoë Smith" / "My Documents" / "config" / "log.csv").samefile(recorded)
