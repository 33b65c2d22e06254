"""The secret scan the e2e run ends with finds a credential wherever it lands, a pickle
included: it reads every file's raw bytes."""

from __future__ import annotations

import pickle
from pathlib import Path

from secret_scan import fake_credentials, hits_in_files, hits_in_text


def test_the_scan_finds_a_leaked_value_in_text_and_pickles(tmp_path: Path) -> None:
    credentials = fake_credentials()
    secret = credentials["AWS_SECRET_ACCESS_KEY"]
    assert len(set(credentials.values())) == len(credentials)  # one value per variable
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "stage.log").write_text(f"connecting with {secret}\n")
    (tmp_path / "tuner.pkl").write_bytes(pickle.dumps({"filesystem": {"secret_key": secret}}))
    (tmp_path / "clean.json").write_text('{"lr": 0.1}')

    hits = hits_in_files([tmp_path], credentials.values())
    assert sorted(hit.split(":")[0] for hit in hits) == sorted(
        [str(tmp_path / "logs" / "stage.log"), str(tmp_path / "tuner.pkl")]
    )
    assert hits_in_text("params", f"{{'key': '{secret}'}}", credentials.values())
    assert not hits_in_text("params", "{'lr': '0.1'}", credentials.values())
