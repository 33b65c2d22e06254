"""The open-run stage: the pipeline's first task, never cached. It opens the MLflow parent
run and says what the cacheable stages depend on.

KFP reuses a task's outputs when its inputs are those of an earlier run. A run-unique input
(the KFP run's id, the MLflow parent run's id) would make every task miss; so data-prep and
pretrain take only content-derived inputs: the config (``config_json`` and the run
parameters) and the digest of the data computed here (:mod:`graft.data.fingerprint`). They
find the parent run to log under by those same two digests, which this stage tags it with.

It also picks the branch after data-prep: pretrain; import-backbone for an external backbone
(``model.family`` hf or graft); or, with ``finetune.warm_start_from_champion`` and a champion
of the config's architecture, import-backbone taking the champion, since a pretrain would be
thrown away.
"""

from __future__ import annotations

import hashlib
import logging

from graft.config import GraftConfig
from graft.data.fingerprint import source_digest
from graft.errors import TrackingError
from graft.io import tracking
from graft.stages.outputs import OpenRunOutput

log = logging.getLogger(__name__)

PIPELINE_BRANCH_TAG = "graft.backbone_branch"


def run(config: GraftConfig, kfp_run_id: str = "local") -> OpenRunOutput:
    data_digest = source_digest(config.data)
    branch = backbone_branch(config)
    parent = tracking.start_pipeline_run(
        config,
        kfp_run_id,
        tags={**digest_tags(config, data_digest), PIPELINE_BRANCH_TAG: branch},
    )
    log.info("open-run: parent run %s, data digest %s, backbone %s", parent, data_digest, branch)
    return OpenRunOutput(parent, data_digest, branch)


def config_digest(config: GraftConfig) -> str:
    return hashlib.sha256(config.to_json().encode()).hexdigest()[:32]


def digest_tags(config: GraftConfig, data_digest: str) -> dict[str, str]:
    return {
        tracking.DATA_DIGEST_TAG: data_digest,
        tracking.CONFIG_DIGEST_TAG: config_digest(config),
    }


def parent_run_for(config: GraftConfig, data_digest: str, *, in_pipeline: bool = False) -> str:
    """The parent run a cacheable stage logs under: the newest pipeline run that open-run
    tagged with this data and config. Two runs of the same data and config at once share
    their results through KFP's cache; their MLflow stage runs then go under the newer.

    Outside a pipeline (the CLI's `graft stage`, a test) a stage without one opens a parent
    run of its own. In a pipeline (``in_pipeline``) open-run always ran first, so a missing
    parent means the tasks see different tracking stores: an error, not an orphan run."""
    tags = digest_tags(config, data_digest)
    found = tracking.runs_tagged(config, {"graft.kind": "pipeline", **tags})
    if found:
        return found[-1]
    if in_pipeline:
        raise TrackingError(
            f"no pipeline run in experiment '{config.tracking.experiment_name}' of "
            f"{config.resolved_tracking_uri()} is tagged {tags}: open-run, the pipeline's "
            "first task, opens and tags it. Every task of a run must reach the same tracking "
            "server (tracking.tracking_uri, and the same experiment): check the task's "
            "environment and config_json"
        )
    return tracking.start_pipeline_run(config, "local", tags=tags)


def backbone_branch(config: GraftConfig) -> str:
    """pretrain, import (model.pretrained) or champion (the warm start's champion)."""
    if config.backbone_source == "import":
        return "import"
    if not config.finetune.warm_start_from_champion:
        return "pretrain"
    # torch, only for the warm start: open-run runs in every pipeline run
    from graft.train.champion import architecture_difference, load_champion

    champion = load_champion(config)
    name = config.export.model_name
    if champion is None:
        log.info("warm start: no champion of '%s' yet; pretraining a backbone", name)
        return "pretrain"
    differing = architecture_difference(champion, config)
    if differing:
        log.warning(
            "warm start: champion %s v%s has another architecture (%s differ); pretraining a "
            "backbone",
            name,
            champion.version,
            differing,
        )
        return "pretrain"
    log.info(
        "warm start: champion %s v%s is the backbone; pretrain skipped", name, champion.version
    )
    return "champion"
