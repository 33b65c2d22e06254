#!/usr/bin/env bash
# Make a Docker engine answer on this machine: install Debian's docker.io and debootstrap when
# missing, and start dockerd when none answers. For the development and CI machines, which
# have no systemd and no image registry; a machine with its own engine is left as it is.
#
# The daemon gets no bridge and no iptables rules (--bridge=none --iptables=false): every
# container runs with --network host, so traffic stays on this machine's own interfaces and
# reaches only the servers the tests start.
set -euo pipefail

LOG="${GRAFT_DOCKERD_LOG:-/tmp/graft-dockerd.log}"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

answers() { docker info >/dev/null 2>&1; }

install_packages() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  [[ ${#missing[@]} -eq 0 ]] && return 0
  [[ "$(id -u)" == 0 ]] || die "installing ${missing[*]} needs root (apt-get); install them and rerun"
  log "installing ${missing[*]} from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

start_daemon() {
  [[ "$(id -u)" == 0 ]] || die "no Docker engine answers and starting dockerd needs root"
  log "starting dockerd (log: ${LOG})"
  nohup dockerd --bridge=none --iptables=false >"${LOG}" 2>&1 &
  for _ in $(seq 1 60); do
    answers && return 0
    sleep 1
  done
  tail -n 20 "${LOG}" >&2 || true
  die "dockerd did not answer within 60 s (log above, in full at ${LOG})"
}

answers && command -v debootstrap >/dev/null 2>&1 && exit 0
install_packages
answers || start_daemon
log "Docker engine ready: $(docker version --format '{{.Server.Version}}')"
