"""A tuning session started by ``graft tune``: what ``graft tune --resume`` needs to continue
it (the parent MLflow run that names the Tune experiment, the config, the input folders),
kept as ``tune-session.json`` in the session's output folder."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from graft.config import GraftConfig, config_from_json
from graft.errors import ConfigError
from graft.io import tracking

SESSION_FILE = "tune-session.json"


@dataclass
class TuneSession:
    parent_run_id: str
    config_json: str
    dataset_dir: str
    pretrained_dir: str
    finetuned_dir: str  # "" when there is no untuned model to compare with
    output_dir: str

    @property
    def config(self) -> GraftConfig:
        return config_from_json(self.config_json)


def start_session(
    config: GraftConfig,
    dataset_dir: Path,
    pretrained_dir: Path,
    finetuned_dir: Path | None,
    output_dir: Path,
    parent_run_id: str | None = None,
) -> TuneSession:
    """A new session; under ``parent_run_id`` (an existing pipeline run, whose interrupted
    tune stage it then resumes) or a new parent run."""
    path = output_dir / SESSION_FILE
    if path.exists():
        raise ConfigError(
            f"{output_dir} already holds a tuning session ({path}); pass --resume to continue "
            "it or choose another --output-dir"
        )
    for name, folder in (("--dataset-dir", dataset_dir), ("--pretrained-dir", pretrained_dir)):
        if not folder.is_dir():
            raise ConfigError(f"{name} {folder} is not a directory")
    if finetuned_dir is not None and not finetuned_dir.is_dir():
        raise ConfigError(f"--finetuned-dir {finetuned_dir} is not a directory")
    session = TuneSession(
        parent_run_id=parent_run_id or tracking.start_pipeline_run(config, "graft-tune"),
        config_json=config.to_json(),
        dataset_dir=str(dataset_dir.resolve()),
        pretrained_dir=str(pretrained_dir.resolve()),
        finetuned_dir=str(finetuned_dir.resolve()) if finetuned_dir else "",
        output_dir=str(output_dir.resolve()),
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(session), indent=2))
    return session


def load_session(output_dir: Path) -> TuneSession:
    path = output_dir / SESSION_FILE
    if not path.exists():
        raise ConfigError(
            f"--resume: no tuning session in {output_dir} ({SESSION_FILE} missing); pass the "
            "--output-dir of the interrupted `graft tune`"
        )
    return TuneSession(**json.loads(path.read_text()))
