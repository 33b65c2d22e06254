"""The training DAG: open-run -> monitor -> data-prep -> pretrain -> transfer-finetune ->
tune -> evaluate -> export.

The monitor compares the data with the champion's training data; under
``monitor.retrain_when`` (``always`` by default) it says whether the training stages run
(``dsl.If`` on its ``retrain`` output).

Caching: open-run (never cached) opens the MLflow parent run and digests the data. data-prep
and pretrain take only content-derived inputs (the config, the data's digest, data-prep's
dataset), so KFP reuses their outputs while neither the data nor the config changed; the
later stages read the champion or log under this run's parent run, and run every time.

The backbone branch: with ``model.family`` hf or graft, or a warm start from the champion,
``import-backbone`` takes pretrain's place (``dsl.If`` on open-run's ``backbone`` output;
``dsl.OneOf`` hands on whichever ran).

The test rows are sealed: data-prep writes them to their own artifact, ``test_split``, and
only evaluate receives it. ``dataset`` (train/val) feeds every other stage, export included
(its parity and variant checks use the validation split).

The six stages run inside a ``dsl.ExitHandler``: its exit task, ``finalize-run``, runs after
them whatever became of them, and when they failed or were cancelled it ends FAILED the
MLflow runs a killed stage left RUNNING (:mod:`graft.stages.finalize`).
"""

from typing import Any

from kfp import dsl, kubernetes

from graft.config import (
    DEFAULT_IMAGE,
    DEFAULT_PRESET,
    FINALIZE_TASK,
    PIPELINE_POD_LABEL,
    RAY_TOKEN_SECRET_KEY,
    SHM_VOLUME,
    ClusterConfig,
    GraftConfig,
    PipelineTaskName,
    StageName,
)
from graft.config.runtime import RAY_AUTH_MODE_ENV, RAY_AUTH_TOKEN_ENV, RAY_TOKEN_AUTH
from graft.kfp.components import make_components, make_exit_component
from graft.kfp.run_parameters import PRECEDENCE, parameter_help
from graft.remote.command import RAY_STAGES

PIPELINE_NAME = "graft-training"


def apply_cluster_settings(
    task: Any, stage: PipelineTaskName, cluster: ClusterConfig, needs_s3: bool
) -> None:
    """Resources, accelerators, placement, retries, pod label, S3 and MLflow secret env for a
    task."""
    settings = cluster.stages.for_stage(stage)
    if settings.cpu_request:
        task.set_cpu_request(settings.cpu_request)
    if settings.cpu_limit:
        task.set_cpu_limit(settings.cpu_limit)
    if settings.memory_request:
        task.set_memory_request(settings.memory_request)
    if settings.memory_limit:
        task.set_memory_limit(settings.memory_limit)
    if settings.accelerator_type:
        task.set_accelerator_type(settings.accelerator_type)
        task.set_accelerator_limit(settings.accelerator_count)
    for key, value in settings.node_selector.items():
        kubernetes.add_node_selector(task, key, value)
    for toleration in settings.tolerations:
        kubernetes.add_toleration(
            task,
            key=toleration.key,
            operator=toleration.operator,
            value=toleration.value,
            effect=toleration.effect,
        )
    if settings.retries:
        task.set_retry(settings.retries, backoff_duration="30s", backoff_factor=2.0)
    kubernetes.add_pod_label(task, *PIPELINE_POD_LABEL)
    if cluster.s3_secret:
        # Credentials reach pods as env vars from a Secret, never through the config. Once the
        # config names an s3:// location the Secret is required: a pod whose Secret is missing
        # (say, created in another namespace) fails to start and says so, instead of running
        # without keys.
        kubernetes.use_secret_as_env(
            task,
            cluster.s3_secret,
            secret_key_to_env=dict(cluster.s3_secret_keys),
            optional=not needs_s3,
        )
    if cluster.mlflow_secret:
        # The MLflow user, for MLflow's client to read (never in the tracking URI). Required:
        # a pipeline pod always logs to a tracking server (pod_guard refuses a pod-local one).
        kubernetes.use_secret_as_env(
            task,
            cluster.mlflow_secret,
            secret_key_to_env=dict(cluster.mlflow_secret_keys),
            optional=False,
        )


def apply_ray_token(task: Any, stage: StageName, config: GraftConfig) -> None:
    """The Ray cluster's token for a training task that joins it (ray.mode=address): Graft
    joins only clusters with token auth and refuses to start without the token. Required:
    a pod whose Secret is missing fails to start and says so. A RayJob (ray.mode=rayjob) is
    followed through the Kubernetes API only, so its task gets no token."""
    secret = config.cluster.ray_token_secret
    if config.ray.mode != "address" or stage not in RAY_STAGES or secret is None:
        return
    kubernetes.use_secret_as_env(
        task, secret, secret_key_to_env={RAY_TOKEN_SECRET_KEY: RAY_AUTH_TOKEN_ENV}
    )
    task.set_env_variable(RAY_AUTH_MODE_ENV, RAY_TOKEN_AUTH)


def apply_pod_settings(task: Any, cluster: ClusterConfig) -> None:
    """Image pull secrets and the memory-backed /dev/shm of every task's pod."""
    if cluster.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(cluster.image_pull_secrets))
    if cluster.shm_size:
        name, path = SHM_VOLUME
        kubernetes.empty_dir_mount(
            task, volume_name=name, mount_path=path, medium="Memory", size_limit=cluster.shm_size
        )


# the cacheable tasks' env var naming the code they run, for KFP's local cache (see below)
CODE_DIGEST_ENV = "GRAFT_CODE_DIGEST"
CACHEABLE_TASKS: tuple[StageName, ...] = ("data-prep", "pretrain")


def build_pipeline(
    image: str = DEFAULT_IMAGE,
    default_config: GraftConfig | None = None,
    compiled_preset: str = DEFAULT_PRESET,
    code_digest: str | None = None,
) -> Any:
    """The pipeline with ``default_config`` (resolved from ``compiled_preset``) as the default
    of ``config_json``; its other parameters are described in :mod:`graft.kfp.run_parameters`.

    ``code_digest`` (a local run's: graft.kfp.local_run.graft_code_digest) goes to the
    cacheable tasks as ``GRAFT_CODE_DIGEST``. KFP's cache keys a task on its image, command,
    inputs and env; on a cluster the image names the code, but a local run's image and
    command stay the same when Graft's library changes, so without it a rerun after an
    upgrade would be served outputs the old code computed. The compiled YAML has none: its
    image tag names the code, and the YAML must not change with every edit.
    """
    components = make_components(image)
    finalize = make_exit_component(image)
    config = default_config or GraftConfig()
    default_json = config.to_json()

    def training_pipeline(
        config_json: str = default_json,
        preset: str = compiled_preset,
        data_source: str = "",
        overrides: list[str] = [],  # noqa: B006 (KFP reads the UI's default from here)
    ) -> None:
        # every task resolves the same config from these (run_parameters.effective_config)
        run = {
            "config_json": config_json,
            "preset": preset,
            "compiled_preset": compiled_preset,
            "data_source": data_source,
            "overrides": overrides,
        }
        exit_task = _add_exit_task(finalize, run)
        with dsl.ExitHandler(exit_task, name="stages"):
            tasks = _add_stage_tasks(components, run)
        every_task: list[tuple[PipelineTaskName, Any]] = [
            *tasks.items(),
            (FINALIZE_TASK, exit_task),
        ]
        for name, task in every_task:
            apply_cluster_settings(task, name, config.cluster, bool(config.s3_locations()))
            apply_pod_settings(task, config.cluster)
        for stage, task in tasks.items():
            apply_ray_token(task, stage, config)
        if code_digest is not None:
            for stage in CACHEABLE_TASKS:
                tasks[stage].set_env_variable(CODE_DIGEST_ENV, code_digest)
        # no pipeline output: KFP takes none from inside an ExitHandler (export's summary is
        # its task's output, which local_run.task_outputs records)

    # KFP shows a parameter's description from the docstring's Args section
    training_pipeline.__doc__ = _pipeline_docstring(compiled_preset)
    return dsl.pipeline(
        name=PIPELINE_NAME,
        description=f"Graft: data-prep, pretrain, transfer-finetune, tune, evaluate, export. "
        f"{PRECEDENCE}",
    )(training_pipeline)


def _add_exit_task(finalize: Any, run: dict[str, Any]) -> Any:
    """The exit task: KFP hands it the stages' final status (``dsl.PipelineTaskFinalStatus``)
    and nothing else of theirs, so it finds the MLflow parent run by the KFP run's id, the
    same placeholder open-run tags the parent run with."""
    task = finalize(kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, **run)
    task.set_display_name(FINALIZE_TASK)
    task.set_caching_options(False)  # it reads the MLflow runs as they are now
    return task


def _add_stage_tasks(components: dict[str, Any], run: dict[str, Any]) -> dict[StageName, Any]:
    """One task per stage, wired by the artifacts each passes on; called inside the pipeline
    function, where KFP records each task it creates into the DAG."""
    opened = components["open-run"](kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, **run)
    opened.set_display_name("open-run")
    opened.set_caching_options(False)  # it opens this run's MLflow run and reads the data now
    watch = components["monitor"](parent_run_id=opened.outputs["Output"], **run)
    watch.set_display_name("monitor")
    watch.set_caching_options(False)  # it compares with the champion of now
    # monitor.retrain_when decides; when it says no, the monitor has ended the parent run
    with dsl.If(watch.outputs["retrain"] == "true", name="retrain"):
        training = _add_training_tasks(components, run, opened)
    return {"open-run": opened, "monitor": watch, **training}


def _add_training_tasks(
    components: dict[str, Any], run: dict[str, Any], opened: Any
) -> dict[StageName, Any]:
    """data-prep to export, under open-run's parent run and with its data digest."""
    parent = opened.outputs["Output"]
    data_digest = opened.outputs["data_digest"]
    # cacheable: the config and the data's digest are its only inputs
    prep = components["data-prep"](data_digest=data_digest, **run)
    prep.set_display_name("data-prep")
    dataset = prep.outputs["dataset"]
    # the backbone: pretrained here, or imported (model.family hf or graft, or the warm
    # start's champion); the other branch is skipped, and KFP shows it as such
    with dsl.If(opened.outputs["backbone"] == "pretrain", name="pretrain-backbone"):
        pre = components["pretrain"](data_digest=data_digest, dataset=dataset, **run)
        pre.set_display_name("pretrain")
    with dsl.Else(name="import-backbone"):
        imported = components["import-backbone"](parent_run_id=parent, dataset=dataset, **run)
        imported.set_display_name("import-backbone")
    backbone = dsl.OneOf(pre.outputs["model"], imported.outputs["model"])
    fine = components["transfer-finetune"](
        parent_run_id=parent,
        dataset=dataset,
        pretrained=backbone,
        **run,
    )
    fine.set_display_name("transfer-finetune")
    search = components["tune"](
        parent_run_id=parent,
        dataset=dataset,
        pretrained=backbone,
        finetuned=fine.outputs["model"],
        **run,
    )
    search.set_display_name("tune")
    score = components["evaluate"](
        parent_run_id=parent,
        dataset=dataset,
        test_split=prep.outputs["test_split"],
        model=search.outputs["best_model"],
        pretrained=backbone,
        **run,
    )
    score.set_display_name("evaluate")
    # evaluate reads "the current champion": a cached result would be stale
    score.set_caching_options(False)
    ship = components["export"](
        parent_run_id=parent,
        dataset=dataset,
        model=search.outputs["best_model"],
        evaluation=score.outputs["evaluation"],
        **run,
    )
    ship.set_display_name("export")
    ship.set_caching_options(False)
    return {
        "data-prep": prep,
        "pretrain": pre,
        "import-backbone": imported,
        "transfer-finetune": fine,
        "tune": search,
        "evaluate": score,
        "export": ship,
    }


def _pipeline_docstring(compiled_preset: str) -> str:
    help_texts = parameter_help(compiled_preset)
    return (
        "Graft: data-prep, pretrain, transfer-finetune, tune, evaluate, export.\n\n"
        f"{PRECEDENCE}\n\nArgs:\n"
        + "".join(f"    {name}: {text}\n" for name, text in help_texts.items())
    )
