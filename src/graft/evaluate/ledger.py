"""The test-split ledger: a model is scored on a sealed test split once.

Every look at the test split that can inform a decision spends part of its worth as an
unbiased estimate: score, tweak, score again, and the test split has become a validation
split. So evaluate records each scoring and refuses a second one of the same model on the same
test rows unless ``evaluate.allow_repeat_test`` says it is deliberate (the run is then tagged
as a repeat, so the extra look is on the record).

The key is (model fingerprint, test-split digest):

- the fingerprint hashes the saved architecture spec and every tensor of the weights, so it
  names *these* weights, wherever the directory lives and whichever run produced them;
- the digest (the split manifest's digest of the target task's test rows) names *these* test
  rows: the same model scored on a new data snapshot's test split is a new look, not a repeat.

A retrain that ends in bit-identical weights (same data, seed and code) IS the same model, so
scoring it again is refused like any other repeat: nothing new can be learned from it, only
the same number seen twice. A retrain on new data, with another seed, or warm-started from the
champion (the retraining loop) has other weights and passes.

The records are tags on evaluate runs in the configured MLflow experiment, so the ledger spans
pipeline runs; deleting an evaluate run deletes its record.

The claim comes first: evaluate writes the tags on its run before it reads the test rows, and
a record stays even when the run fails later (an artifact upload, a killed pod): the rows may
have been read. A retry of the same pipeline run (the same parent run, as a KFP retry has)
continues that look rather than repeat it, so it is let through, and tagged with the earlier
attempts; another pipeline run is refused. Two pipeline runs that check at the same moment
each write their claim and then look again: whichever sees the other's claim withdraws its
own and is refused (both may be; never neither).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from graft.config import GraftConfig
from graft.errors import HoldoutReuseError
from graft.io import tracking

MODEL_TAG = "graft.test_evaluated_model"
SPLIT_TAG = "graft.test_split_digest"
REPEAT_TAG = "graft.test_repeat"
PREVIOUS_TAG = "graft.test_previous_runs"
CONTINUES_TAG = "graft.test_continues"  # earlier attempts of the same pipeline run


def model_fingerprint(spec_file: Path, weights_file: Path) -> str:
    """32 hex digits over a saved model's spec file and each weight tensor of its state dict
    (name, dtype, shape, bytes), independent of how ``torch.save`` laid the file out. The
    caller names the two files of its checkpoint layout (graft.train's)."""
    digest = hashlib.sha256(spec_file.read_bytes())
    state = torch.load(weights_file, map_location="cpu", weights_only=True)
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


def previous_evaluations(
    config: GraftConfig, fingerprint: str, split_digest: str, parent_run_id: str = ""
) -> tuple[list[str], list[str]]:
    """Evaluate runs that already scored (or claimed) this model on this test split, oldest
    first: those of other pipeline runs, and those of pipeline run ``parent_run_id``."""
    found = tracking.runs_tagged(config, {MODEL_TAG: fingerprint, SPLIT_TAG: split_digest})
    if not found or not parent_run_id:
        return found, []
    mine = tracking.runs_tagged(
        config,
        {MODEL_TAG: fingerprint, SPLIT_TAG: split_digest, tracking.PARENT_TAG: parent_run_id},
    )
    return [run for run in found if run not in mine], mine


def check_first_look(
    config: GraftConfig, fingerprint: str, split_digest: str, parent_run_id: str = ""
) -> dict[str, str]:
    """Refuse a look of another pipeline run unless ``evaluate.allow_repeat_test``; return the
    tags that record this evaluation on its run."""
    previous, continued = previous_evaluations(config, fingerprint, split_digest, parent_run_id)
    if previous and not config.evaluate.allow_repeat_test:
        raise _refusal(fingerprint, previous)
    tags = {
        MODEL_TAG: fingerprint,
        SPLIT_TAG: split_digest,
        REPEAT_TAG: "true" if previous else "false",
    }
    if previous:
        tags[PREVIOUS_TAG] = ",".join(previous)[:5000]
    if continued:
        tags[CONTINUES_TAG] = ",".join(continued)[:5000]
    return tags


def claim_first_look(
    config: GraftConfig, run_id: str, parent_run_id: str, fingerprint: str, split_digest: str
) -> dict[str, str]:
    """Check, then record this look on evaluate run ``run_id`` (of pipeline run
    ``parent_run_id``) before the test rows are read, then check again for a claim another
    pipeline run made at the same moment; withdraw and refuse if there is one. Returns the
    tags written."""
    tags = check_first_look(config, fingerprint, split_digest, parent_run_id)
    tracking.logger_for(config, run_id).tags(tags)
    if config.evaluate.allow_repeat_test:
        return tags
    previous, _ = previous_evaluations(config, fingerprint, split_digest, parent_run_id)
    rivals = [run for run in previous if run != run_id]
    if rivals:
        tracking.delete_run_tags(config, run_id, list(tags))
        raise _refusal(fingerprint, rivals)
    return tags


def _refusal(fingerprint: str, previous: list[str]) -> HoldoutReuseError:
    more = f" and {len(previous) - 1} more" if len(previous) > 1 else ""
    return HoldoutReuseError(
        f"model {fingerprint[:12]} was already scored on this test split (evaluate run "
        f"{previous[0]}{more}, of another pipeline run); a second look makes the test split a "
        "validation split. Train a new model, retry the pipeline run that scored it (a retry "
        "continues its look), or set evaluate.allow_repeat_test=true to score it again on "
        "purpose"
    )
