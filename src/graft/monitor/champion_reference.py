"""The reference statistics registered with ``models:/<export.model_name>@champion``, or with
``@challenger`` (``monitor.reference``).

Export logs data-prep's ``reference`` folder in each version's run, next to its ``weights``
(graft.train.champion); this module downloads and reads the one the monitor compares with."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from graft.config import GraftConfig
from graft.data.reference import REFERENCE_FOLDER, ReferenceStatistics, read_reference
from graft.errors import DatasetError, RegistryError
from graft.io import registry, tracking


@dataclass(frozen=True)
class ChampionReference:
    version: str
    # None: the version was registered without statistics (by a Graft from before the
    # monitor, or before a streaming data-prep computed them)
    reference: ReferenceStatistics | None


def champion_reference(config: GraftConfig) -> ChampionReference | None:
    """The version ``monitor.reference`` names (the champion unless set) and its reference
    statistics; None when there is no such version. RegistryError when the registry cannot
    answer (an outage must not read as "none")."""
    version = registry.champion_version(config, config.monitor.reference)
    if version is None:
        return None
    number = str(version.version)
    if not tracking.client_for(config).list_artifacts(version.run_id, REFERENCE_FOLDER):
        return ChampionReference(number, None)
    with tempfile.TemporaryDirectory(prefix="graft-reference-") as scratch:
        folder = registry.download_version_files(config, version, REFERENCE_FOLDER, Path(scratch))
        try:
            return ChampionReference(number, read_reference(folder))
        except DatasetError as exc:
            raise RegistryError(
                f"models:/{config.export.model_name}/{number}'s '{REFERENCE_FOLDER}' files "
                f"cannot be read: {exc}"
            ) from None
