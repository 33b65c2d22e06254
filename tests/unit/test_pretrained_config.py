"""model.pretrained and the imported families (hf, graft): what the config accepts, and the
fix each refusal names."""

from __future__ import annotations

import pytest

from graft.config import load_config
from graft.config.model import registered_model_uri
from graft.errors import ConfigError


def _config(*overrides: str) -> object:
    return load_config(preset="tiny", overrides=list(overrides))


@pytest.mark.parametrize(
    "source",
    [
        "/data/models/resnet-18",
        "backbones/resnet",
        "s3://models/resnet-18/",
        "runs:/0123abcd/hf",
        "models:/resnet-hf/2",
        "mlflow-artifacts:/3/0123abcd/artifacts/hf",
    ],
)
def test_hf_reads_a_folder_an_s3_prefix_or_an_mlflow_uri(source: str) -> None:
    config = _config("model.family=hf", f"model.pretrained={source}")
    assert config.model.pretrained == source  # type: ignore[attr-defined]
    assert config.backbone_source == "import"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("source", "fix"),
    [
        ("https://huggingface.co/microsoft/resnet-18", "never downloads from the Hugging Face"),
        ("hf://microsoft/resnet-18", "save_pretrained(DIR)"),
        ("gs://bucket/resnet", "an s3:// prefix or an MLflow artifact URI"),
        ("file:///data/resnet", "as a plain path, without file://"),
    ],
)
def test_hf_refuses_other_schemes(source: str, fix: str) -> None:
    with pytest.raises(ConfigError, match=r"model.pretrained") as refused:
        _config("model.family=hf", f"model.pretrained={source}")
    assert fix in str(refused.value)


@pytest.mark.parametrize(
    "source", ["models:/graft-tiny@champion", "models:/graft-tiny/3", "models:/a.b-c@v2"]
)
def test_graft_takes_a_registered_version_or_alias(source: str) -> None:
    assert _config("model.family=graft", f"model.pretrained={source}").model.pretrained == source  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "source", ["models:/graft-tiny", "models:/graft-tiny/latest", "runs:/abc/weights", "/tmp/m"]
)
def test_graft_refuses_anything_but_models_name_alias_or_version(source: str) -> None:
    with pytest.raises(ConfigError, match="write models:/NAME@ALIAS"):
        _config("model.family=graft", f"model.pretrained={source}")


def test_registered_uri_parts() -> None:
    assert registered_model_uri("models:/m@champion") == ("m", "champion", None)
    assert registered_model_uri("models:/m/12") == ("m", None, "12")
    assert registered_model_uri("models:/m/12/extra") is None


@pytest.mark.parametrize(("family", "needs"), [("hf", "save_pretrained"), ("graft", "models:/")])
def test_an_imported_family_needs_pretrained(family: str, needs: str) -> None:
    with pytest.raises(ConfigError, match=f"model.family={family} imports its backbone") as refused:
        _config(f"model.family={family}")
    assert needs in str(refused.value)


@pytest.mark.parametrize(
    ("source", "hint"),
    [("/data/resnet", "set model.family=hf"), ("models:/m@champion", "model.family=graft")],
)
def test_pretrained_with_a_native_family_names_the_family_to_set(source: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=r"model.family=cnn") as refused:
        _config("model.family=cnn", f"model.pretrained={source}")
    assert hint in str(refused.value)


def test_tune_may_search_dropout_but_no_architecture_key_of_an_imported_backbone() -> None:
    # the tiny preset's space searches the LR and model.dropout.rate: both still apply
    _config("model.family=hf", "model.pretrained=/data/resnet")
    with pytest.raises(ConfigError, match=r"tune.space searches model.hidden_sizes") as refused:
        _config(
            "model.family=graft",
            "model.pretrained=models:/m@champion",
            'tune.space={"model.hidden_sizes": {"type": "choice", "values": [[8], [16]]}}',
        )
    assert "fixes the architecture" in str(refused.value)
    _config(  # off when tune does not run
        "model.family=hf",
        "model.pretrained=/data/resnet",
        "tune.enabled=false",
        'tune.space={"model.hidden_sizes": {"type": "choice", "values": [[8], [16]]}}',
    )


def test_an_imported_backbone_skips_pretrain_so_its_objective_is_not_checked() -> None:
    with pytest.raises(ConfigError, match=r"needs model.family=mlp"):
        _config("model.family=cnn", "pretrain.objective=autoencoder")
    _config("model.family=hf", "model.pretrained=/m", "pretrain.objective=autoencoder")
