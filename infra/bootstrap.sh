#!/usr/bin/env bash
# Bootstrap a Kubernetes cluster for Graft:
#   1. Kubeflow Pipelines (standalone, kustomize manifests of a pinned 2.x release)
#   2. the KubeRay operator (its Helm chart, pinned v1.x; installs the ray.io CRDs)
#   3. the Secrets the chart and the pipeline's pods read, from environment variables
#   4. the Graft chart (charts/graft): MLflow + Postgres, a RayCluster, RBAC, NetworkPolicies
#   5. the training pipeline, compiled for the image the chart runs (`graft compile --image`)
#      and uploaded to KFP (`graft upload`), so runs start from the KFP UI
#
# Usage:
#   export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...     # S3 for MLflow artifacts
#   export GRAFT_DB_PASSWORD=...      # optional: generated when unset (in-chart Postgres)
#   infra/bootstrap.sh [extra helm args, e.g. -f charts/graft/values-production.yaml]
#   (with values-production.yaml, set GRAFT_IMAGE to its registry image)
#
# Environment (defaults in brackets):
#   KUBE_CONTEXT          kubectl/helm context [current context]
#   GRAFT_NAMESPACE       where KFP runs pipeline pods, and so where the chart, the Secrets,
#                         the Role and the RayJobs go: a pod reads Secrets and creates
#                         RayJobs only in its own namespace [kubeflow: standalone KFP; with
#                         multi-user Kubeflow, your profile's namespace]
#   GRAFT_RELEASE         Helm release name [graft]
#   GRAFT_DB_SECRET       Secret holding the database password [graft-postgres]; with
#                         values-production.yaml use its externalDatabase.existingSecret
#   GRAFT_RAY_TOKEN_SECRET Secret holding the Ray clusters' token under key auth_token
#                         [graft-ray-token]; created with a random token when missing, kept
#                         when present (a new token would lock out running clusters)
#   GRAFT_MLFLOW_SECRET   Secret holding MLflow's admin user (keys username, password) and
#                         its Flask key (flask-secret-key) [graft-mlflow-auth]; created with
#                         a random password when missing, kept when present (MLflow creates
#                         the admin user once, with the password it first saw)
#   GRAFT_MLFLOW_USER     MLflow admin user name for a new Secret [graft-admin]
#   KFP_VERSION           Kubeflow Pipelines release [2.14.3]
#   KFP_ENV               KFP kustomize env: platform-agnostic | dev [platform-agnostic]
#   KUBERAY_VERSION       KubeRay operator chart version [1.7.0]
#   KUBERAY_NAMESPACE     namespace for the operator [kuberay-system]
#   SKIP_KFP=1            do not install KFP
#   SKIP_KUBERAY=1        do not install the KubeRay operator
#   GRAFT_S3_ENDPOINT_URL S3-compatible endpoint (MinIO, SeaweedFS); empty for AWS S3
#   GRAFT_ARTIFACTS_URI   MLflow artifact destination [chart default s3://graft-mlflow/artifacts]
#   KIND_CLUSTER          when set, build the images and `kind load` them into this cluster
#   GRAFT_IMAGE           the graft image: built under this name with KIND_CLUSTER, run by the
#                         chart's Ray pods (it sets the chart's image.repository/tag) and by
#                         the pipeline's tasks [graft:0.1.0-cpu]
#   GRAFT_PRESET          preset compiled into the pipeline: default | tiny [default]
#   GRAFT_CHECKPOINTS_URI where the pipeline's training tasks keep Ray Train checkpoints, so
#                         a retried task resumes [s3://graft-mlflow/ray]
#   GRAFT_TRACKING_URI    MLflow address the pipeline's tasks log to
#                         [http://<release fullname>-mlflow.<namespace>.svc:5000, the chart's]
#   KFP_HOST              KFP API address for the upload [a port-forward to svc/ml-pipeline-ui
#                         on 127.0.0.1:KFP_LOCAL_PORT, KFP_LOCAL_PORT default 8080]
#   KFP_TOKEN             bearer token for a KFP behind auth (read by graft, never printed)
#   GRAFT_CLI             the graft command [.venv/bin/graft of this repo, else graft on PATH]
#   SKIP_PIPELINE=1       do not compile and upload the pipeline (also skipped with
#                         SKIP_KFP=1 unless KFP_HOST names a KFP to upload to)
#   DRY_RUN=1             print the commands instead of running them (secret values are
#                         never printed)
#
# Needs kubectl (with kustomize, >= 1.27) and helm 3.8+; docker and kind only with
# KIND_CLUSTER; graft (`make setup`) for the pipeline. Re-running is safe: every step is an
# apply or an upgrade --install, and a second upload adds a version of the pipeline.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly CHART_DIR="${ROOT}/charts/graft"

GRAFT_NAMESPACE="${GRAFT_NAMESPACE:-kubeflow}"
GRAFT_RELEASE="${GRAFT_RELEASE:-graft}"
GRAFT_DB_SECRET="${GRAFT_DB_SECRET:-graft-postgres}"
GRAFT_MLFLOW_SECRET="${GRAFT_MLFLOW_SECRET:-graft-mlflow-auth}"
GRAFT_MLFLOW_USER="${GRAFT_MLFLOW_USER:-graft-admin}"
GRAFT_RAY_TOKEN_SECRET="${GRAFT_RAY_TOKEN_SECRET:-graft-ray-token}"
KFP_VERSION="${KFP_VERSION:-2.14.3}"
KFP_ENV="${KFP_ENV:-platform-agnostic}"
KUBERAY_VERSION="${KUBERAY_VERSION:-1.7.0}"
KUBERAY_NAMESPACE="${KUBERAY_NAMESPACE:-kuberay-system}"
GRAFT_IMAGE="${GRAFT_IMAGE:-graft:0.1.0-cpu}"
GRAFT_PRESET="${GRAFT_PRESET:-default}"
KFP_LOCAL_PORT="${KFP_LOCAL_PORT:-8080}"
DRY_RUN="${DRY_RUN:-0}"
# The compiled pipeline goes here (build/ is git-ignored), not over the committed pipelines/:
# those are compiled for the default image.
readonly PIPELINE_BUILD_DIR="${ROOT}/build/kfp"

if [[ -n "${GRAFT_CLI:-}" ]]; then
  GRAFT=("${GRAFT_CLI}")
elif [[ -x "${ROOT}/.venv/bin/graft" ]]; then
  GRAFT=("${ROOT}/.venv/bin/graft")
else
  GRAFT=(graft)
fi

KUBECTL=(kubectl)
HELM=(helm)
if [[ -n "${KUBE_CONTEXT:-}" ]]; then
  KUBECTL+=(--context "${KUBE_CONTEXT}")
  HELM+=(--kube-context "${KUBE_CONTEXT}")
fi

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# name:tag, with a tag: the chart takes the two apart, and an untagged or digest reference
# would not survive that.
[[ "${GRAFT_IMAGE}" =~ ^[^@]+:[^:/@]+$ ]] \
  || die "GRAFT_IMAGE '${GRAFT_IMAGE}' needs a tag, e.g. registry.example.com/ml/graft:0.1.0-cpu"
readonly GRAFT_IMAGE_REPOSITORY="${GRAFT_IMAGE%:*}"
readonly GRAFT_IMAGE_TAG="${GRAFT_IMAGE##*:}"

# Run a command, or print it under DRY_RUN=1.
run() {
  if [[ "${DRY_RUN}" == "1" ]]; then
    printf '+ %s\n' "$*"
  else
    "$@"
  fi
}

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is required but not on PATH ($2)"
}

check_tools() {
  [[ "${DRY_RUN}" == "1" ]] && return 0
  need kubectl "https://kubernetes.io/docs/tasks/tools/"
  need helm "https://helm.sh/docs/intro/install/"
  if [[ -n "${KIND_CLUSTER:-}" ]]; then
    need docker "https://docs.docker.com/engine/install/"
    need kind "https://kind.sigs.k8s.io/docs/user/quick-start/"
  fi
  if uploads_pipeline; then
    need "${GRAFT[0]}" "run \`make setup\` in ${ROOT}, or set GRAFT_CLI"
  fi
  "${KUBECTL[@]}" version >/dev/null || die "cannot reach the cluster; check KUBE_CONTEXT / kubeconfig"
}

install_kfp() {
  local base="github.com/kubeflow/pipelines/manifests/kustomize"
  log "Kubeflow Pipelines ${KFP_VERSION} (${KFP_ENV})"
  run "${KUBECTL[@]}" apply -k "${base}/cluster-scoped-resources?ref=${KFP_VERSION}"
  run "${KUBECTL[@]}" wait --for condition=established --timeout=120s crd/applications.app.k8s.io
  run "${KUBECTL[@]}" apply -k "${base}/env/${KFP_ENV}?ref=${KFP_VERSION}"
  run "${KUBECTL[@]}" -n kubeflow wait --for=condition=Available deployment --all --timeout=900s
}

install_kuberay() {
  log "KubeRay operator ${KUBERAY_VERSION}"
  run "${HELM[@]}" repo add kuberay https://ray-project.github.io/kuberay-helm/ --force-update
  run "${HELM[@]}" repo update kuberay
  run "${HELM[@]}" upgrade --install kuberay-operator kuberay/kuberay-operator \
    --version "${KUBERAY_VERSION}" --namespace "${KUBERAY_NAMESPACE}" --create-namespace --wait
  run "${KUBECTL[@]}" wait --for condition=established --timeout=120s \
    crd/rayclusters.ray.io crd/rayjobs.ray.io
}

# Create or update a generic Secret from KEY=VALUE lines on stdin, so values never appear
# in a process's arguments or in this script's output.
apply_secret() {
  local name="$1"
  shift
  if [[ "${DRY_RUN}" == "1" ]]; then
    cat >/dev/null
    printf '+ kubectl -n %s create secret generic %s (keys: %s) | kubectl apply -f -\n' \
      "${GRAFT_NAMESPACE}" "${name}" "$*"
    return 0
  fi
  "${KUBECTL[@]}" -n "${GRAFT_NAMESPACE}" create secret generic "${name}" \
    --from-env-file=/dev/stdin --dry-run=client -o yaml \
    | "${KUBECTL[@]}" apply -f -
}

create_namespace_and_secrets() {
  log "namespace ${GRAFT_NAMESPACE} and secrets"
  if [[ "${DRY_RUN}" == "1" ]]; then
    printf '+ kubectl create namespace %s | kubectl apply -f -\n' "${GRAFT_NAMESPACE}"
  else
    "${KUBECTL[@]}" create namespace "${GRAFT_NAMESPACE}" --dry-run=client -o yaml \
      | "${KUBECTL[@]}" apply -f -
  fi

  [[ -n "${AWS_ACCESS_KEY_ID:-}" ]] || die "AWS_ACCESS_KEY_ID is not set (S3 key for MLflow artifacts)"
  [[ -n "${AWS_SECRET_ACCESS_KEY:-}" ]] || die "AWS_SECRET_ACCESS_KEY is not set"
  # The pipeline's pods take their S3 endpoint from the same Secret as the keys.
  {
    printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n' \
      "${AWS_ACCESS_KEY_ID}" "${AWS_SECRET_ACCESS_KEY}"
    [[ -z "${GRAFT_S3_ENDPOINT_URL:-}" ]] || printf 'AWS_ENDPOINT_URL=%s\n' "${GRAFT_S3_ENDPOINT_URL}"
  } | apply_secret graft-s3 AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY \
    ${GRAFT_S3_ENDPOINT_URL:+AWS_ENDPOINT_URL}

  local db_password="${GRAFT_DB_PASSWORD:-}"
  if [[ -z "${db_password}" ]]; then
    # Hex only: the password is embedded in MLflow's database URI.
    db_password="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
    log "GRAFT_DB_PASSWORD unset: generated one (kept only in Secret ${GRAFT_DB_SECRET})"
  fi
  printf 'password=%s\n' "${db_password}" | apply_secret "${GRAFT_DB_SECRET}" password
}

# Whether Secret $1 is already in the namespace (never, in a dry run): Secrets holding a
# token or a user are created once, since running clusters and MLflow keep the first value.
secret_exists() {
  [[ "${DRY_RUN}" != "1" ]] \
    && "${KUBECTL[@]}" -n "${GRAFT_NAMESPACE}" get secret "$1" >/dev/null 2>&1
}

# The token of every Ray cluster (the chart's RayCluster, the pipeline's RayJobs) and of the
# pipeline pods that join one. KubeRay reads it from the key auth_token. Created once: the
# running clusters and pods hold the token they started with.
create_ray_token_secret() {
  local name="${GRAFT_RAY_TOKEN_SECRET}"
  if secret_exists "${name}"; then
    log "Secret ${name} exists: keeping its Ray token"
    return 0
  fi
  printf 'auth_token=%s\n' "$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" \
    | apply_secret "${name}" auth_token
}

# MLflow's admin user, which the server creates on its first start and the pipeline's pods
# log as, and the Flask key its workers share. Created once and never printed: a new
# password would not reach the admin user MLflow already has.
create_mlflow_auth_secret() {
  local name="${GRAFT_MLFLOW_SECRET}"
  if secret_exists "${name}"; then
    log "Secret ${name} exists: keeping its MLflow user"
    return 0
  fi
  printf 'username=%s\npassword=%s\nflask-secret-key=%s\n' "${GRAFT_MLFLOW_USER}" \
    "$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" \
    "$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" \
    | apply_secret "${name}" username password flask-secret-key
}

load_kind_images() {
  [[ -n "${KIND_CLUSTER:-}" ]] || return 0
  log "building images and loading them into kind cluster ${KIND_CLUSTER}"
  run docker build -f "${ROOT}/images/Dockerfile.cpu" -t "${GRAFT_IMAGE}" "${ROOT}"
  run docker build -f "${ROOT}/images/Dockerfile.mlflow" -t graft-mlflow:3.17.2 "${ROOT}/images"
  run kind load docker-image --name "${KIND_CLUSTER}" "${GRAFT_IMAGE}" graft-mlflow:3.17.2
}

install_chart() {
  # one image for the Ray pods and the pipeline's tasks (compile_and_upload_pipeline)
  local args=(--set-string "rayAuth.secretName=${GRAFT_RAY_TOKEN_SECRET}")
  if [[ "${SKIP_KUBERAY:-0}" != "1" ]]; then
    # the Ray NetworkPolicy lets the operator reach a RayJob's Jobs API
    args+=(--set-string "networkPolicy.kuberayOperator.namespace=${KUBERAY_NAMESPACE}")
  fi
  args+=(--set-string "mlflow.auth.existingSecret=${GRAFT_MLFLOW_SECRET}")
  args+=(--set-string "image.repository=${GRAFT_IMAGE_REPOSITORY}"
    --set-string "image.tag=${GRAFT_IMAGE_TAG}")
  if [[ -n "${GRAFT_S3_ENDPOINT_URL:-}" ]]; then
    args+=(--set-string "mlflow.artifacts.endpointUrl=${GRAFT_S3_ENDPOINT_URL}")
  fi
  if [[ -n "${GRAFT_ARTIFACTS_URI:-}" ]]; then
    args+=(--set-string "mlflow.artifacts.destination=${GRAFT_ARTIFACTS_URI}")
  fi
  log "chart ${CHART_DIR} as release ${GRAFT_RELEASE} in ${GRAFT_NAMESPACE}"
  run "${HELM[@]}" upgrade --install "${GRAFT_RELEASE}" "${CHART_DIR}" \
    --namespace "${GRAFT_NAMESPACE}" --wait --timeout 15m "${args[@]}" "$@"
}

# The chart's fullname helper (templates/_helpers.tpl) without overrides: the release name
# when it already contains "graft", else <release>-graft.
chart_fullname() {
  if [[ "${GRAFT_RELEASE}" == *graft* ]]; then
    printf '%s' "${GRAFT_RELEASE}"
  else
    printf '%s-graft' "${GRAFT_RELEASE}"
  fi
}

uploads_pipeline() {
  [[ "${SKIP_PIPELINE:-0}" != "1" ]] || return 1
  # with no KFP installed here and none named, there is nothing to upload to
  [[ "${SKIP_KFP:-0}" != "1" || -n "${KFP_HOST:-}" ]]
}

# A kubectl port-forward to the KFP UI service until this script exits.
port_forward_kfp() {
  local port="$1"
  if [[ "${DRY_RUN}" == "1" ]]; then
    printf '+ %s -n kubeflow port-forward svc/ml-pipeline-ui %s:80 &\n' \
      "${KUBECTL[*]}" "${port}"
    return 0
  fi
  "${KUBECTL[@]}" -n kubeflow port-forward svc/ml-pipeline-ui "${port}:80" >/dev/null &
  PORT_FORWARD_PID=$!
  trap 'kill "${PORT_FORWARD_PID}" 2>/dev/null || true' EXIT
  local _
  for _ in $(seq 30); do
    if (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then
      return 0
    fi
    sleep 1
  done
  die "no port-forward to svc/ml-pipeline-ui on 127.0.0.1:${port} after 30 s; set KFP_HOST"
}

compile_and_upload_pipeline() {
  uploads_pipeline || return 0
  local tracking="${GRAFT_TRACKING_URI:-http://$(chart_fullname)-mlflow.${GRAFT_NAMESPACE}.svc:5000}"
  log "pipeline for ${GRAFT_IMAGE} (preset ${GRAFT_PRESET}), tracking to ${tracking}"
  # a retried training task resumes only from checkpoints outside its pod: a pipeline pod
  # refuses pod-local ones (graft.kfp.pod_guard)
  local checkpoints="${GRAFT_CHECKPOINTS_URI:-s3://graft-mlflow/ray}"
  local endpoint=()
  if [[ -n "${GRAFT_S3_ENDPOINT_URL:-}" ]]; then
    endpoint=(--set "cluster.s3_secret_keys.AWS_ENDPOINT_URL=AWS_ENDPOINT_URL")
  fi
  run "${GRAFT[@]}" compile --image "${GRAFT_IMAGE}" --preset "${GRAFT_PRESET}" \
    --set "tracking.tracking_uri=${tracking}" \
    --set "ray.storage_uri=${checkpoints}" "${endpoint[@]}" \
    --set "cluster.ray_token_secret=${GRAFT_RAY_TOKEN_SECRET}" \
    --set "cluster.mlflow_secret=${GRAFT_MLFLOW_SECRET}" \
    --pipelines-dir "${PIPELINE_BUILD_DIR}/pipelines" \
    --components-dir "${PIPELINE_BUILD_DIR}/components"
  local host="${KFP_HOST:-}"
  if [[ -z "${host}" ]]; then
    host="http://127.0.0.1:${KFP_LOCAL_PORT}"
    port_forward_kfp "${KFP_LOCAL_PORT}"
  fi
  # KFP_TOKEN, when set, reaches graft through the environment, never the command line
  run "${GRAFT[@]}" upload --host "${host}" \
    --package "${PIPELINE_BUILD_DIR}/pipelines/training.yaml"
}

main() {
  check_tools
  [[ "${SKIP_KFP:-0}" == "1" ]] || install_kfp
  [[ "${SKIP_KUBERAY:-0}" == "1" ]] || install_kuberay
  create_namespace_and_secrets
  create_ray_token_secret
  create_mlflow_auth_secret
  load_kind_images
  install_chart "$@"
  compile_and_upload_pipeline
  # the chart binds its Role (create RayJobs) to its own account only, never to KFP's shared
  # pipeline-runner
  log "runs that use ray.mode=rayjob must run as service account $(chart_fullname)-pipeline" \
    "(graft submit/schedule: cluster.service_account; KFP UI: the run form's service account)"
  log "done; see infra/README.md for pointing graft at this cluster"
}

main "$@"
