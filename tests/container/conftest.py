"""The container tier's fixtures live in docker_services.py, which test modules import from."""

from docker_services import container_cluster, images

__all__ = ["container_cluster", "images"]
