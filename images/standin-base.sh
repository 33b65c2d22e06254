#!/usr/bin/env bash
# Give `docker build` the base image it names when no registry can be reached: a stand-in
# under the same tag, imported from a Debian bookworm root made by debootstrap, with python3,
# venv, pip and CA certificates, and `python` linked to python3 as in the official image.
#
#   images/standin-base.sh python:3.11.13-slim-bookworm
#
# A tag that is already present (pulled from a registry, or imported earlier) is kept. The
# stand-in's Python is Debian's (3.11.2), not the tag's patch release: the images built on it
# are for testing on these machines, and the Dockerfiles still name the official image.
# The root filesystem is cached as a tarball (GRAFT_CACHE, default ~/.cache/graft), since
# debootstrap takes about a minute; without the cache it is made again.
set -euo pipefail

TAG="${1:?usage: images/standin-base.sh <image tag>}"
CACHE="${GRAFT_CACHE:-${HOME}/.cache/graft}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# v2: without debootstrap's downloaded .debs, and with the official images' apt cleanup
TARBALL="${CACHE}/standin-bookworm-python-v2.tar"

log() { printf '==> %s\n' "$*" >&2; }

if docker image inspect "${TAG}" >/dev/null 2>&1; then
  exit 0
fi
if docker pull -q "${TAG}" >/dev/null 2>&1; then
  exit 0
fi

if [[ ! -s "${TARBALL}" ]]; then
  root="$(mktemp -d)"
  trap 'rm -rf "${root}"' EXIT
  log "no registry answers for ${TAG}: making a stand-in with debootstrap (about a minute)"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "${root}" "${MIRROR}" >/dev/null
  ln -sf python3 "${root}/usr/bin/python"
  # As Debian's official images do: no package archives in the image, and apt removes what it
  # downloads after each install (their /etc/apt/apt.conf.d/docker-clean), so an
  # `apt-get install` in a Dockerfile leaves no .debs in its layer.
  rm -rf "${root}"/var/lib/apt/lists/* "${root}"/var/cache/apt/*.bin \
    "${root}"/var/cache/apt/archives/*.deb
  cat >"${root}/etc/apt/apt.conf.d/docker-clean" <<'CONF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CONF
  mkdir -p "${CACHE}"
  tar -C "${root}" -cf "${TARBALL}.part" .
  mv "${TARBALL}.part" "${TARBALL}"
fi
log "importing the stand-in base as ${TAG}"
docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'LABEL dev.graft.standin="debootstrap bookworm"' \
  --change 'CMD ["python3"]' \
  "${TARBALL}" "${TAG}" >/dev/null
