{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "graft.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; the release name when it already contains the chart name. */}}
{{- define "graft.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "graft.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "graft.labels" -}}
helm.sh/chart: {{ include "graft.chart" . }}
app.kubernetes.io/name: {{ include "graft.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: graft
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels for one component: include "graft.selectorLabels" (list . "mlflow"). */}}
{{- define "graft.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "graft.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "graft.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-pipeline" (include "graft.fullname" .)) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "graft.mlflow.fullname" -}}
{{- printf "%s-mlflow" (include "graft.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "graft.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "graft.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "graft.raycluster.fullname" -}}
{{- printf "%s-ray" (include "graft.fullname" .) | trunc 47 | trimSuffix "-" }}
{{- end }}

{{- define "graft.mlflow.url" -}}
{{- printf "http://%s.%s.svc:%d" (include "graft.mlflow.fullname" .) .Release.Namespace (int .Values.mlflow.service.port) }}
{{- end }}

{{- define "graft.image" -}}
{{- printf "%s:%s" .repository .tag }}
{{- end }}

{{/* Pod-level security context. */}}
{{- define "graft.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container security context; pass (list . readOnlyRootFilesystem). */}}
{{- define "graft.containerSecurityContext" -}}
{{- $root := index . 0 -}}
runAsNonRoot: true
runAsUser: {{ $root.Values.securityContext.runAsUser }}
runAsGroup: {{ $root.Values.securityContext.runAsGroup }}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: {{ index . 1 }}
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Database host, port, name, user and password Secret for MLflow's backend store. */}}
{{- define "graft.database.host" -}}
{{- if .Values.postgresql.enabled }}
{{- include "graft.postgresql.fullname" . }}
{{- else }}
{{- required "externalDatabase.host is required when postgresql.enabled=false" .Values.externalDatabase.host }}
{{- end }}
{{- end }}

{{- define "graft.database.port" -}}
{{- if .Values.postgresql.enabled }}5432{{ else }}{{ .Values.externalDatabase.port }}{{ end }}
{{- end }}

{{- define "graft.database.name" -}}
{{- if .Values.postgresql.enabled }}{{ .Values.postgresql.auth.database }}{{ else }}{{ .Values.externalDatabase.database }}{{ end }}
{{- end }}

{{- define "graft.database.user" -}}
{{- if .Values.postgresql.enabled }}{{ .Values.postgresql.auth.username }}{{ else }}{{ .Values.externalDatabase.username }}{{ end }}
{{- end }}

{{- define "graft.database.secretName" -}}
{{- if .Values.postgresql.enabled }}
{{- .Values.postgresql.auth.existingSecret }}
{{- else }}
{{- required "externalDatabase.existingSecret is required when postgresql.enabled=false" .Values.externalDatabase.existingSecret }}
{{- end }}
{{- end }}

{{- define "graft.database.secretKey" -}}
{{- if .Values.postgresql.enabled }}{{ .Values.postgresql.auth.passwordKey }}{{ else }}{{ .Values.externalDatabase.passwordKey }}{{ end }}
{{- end }}

{{/*
MLflow's database URI, without the password: libpq reads it from PGPASSWORD, so it is in no
URI, argument or ConfigMap. +psycopg2: the driver images/Dockerfile.mlflow ships; a bare
postgresql:// makes SQLAlchemy 2.1 load psycopg 3, and the server exits at start (seen in
containers).
*/}}
{{- define "graft.database.uri" -}}
{{- $ssl := ternary "" (printf "?sslmode=%s" .Values.externalDatabase.sslmode) (or .Values.postgresql.enabled (empty .Values.externalDatabase.sslmode)) -}}
{{- printf "postgresql+psycopg2://%s@%s:%s/%s%s" (include "graft.database.user" .) (include "graft.database.host" .) (include "graft.database.port" .) (include "graft.database.name" .) $ssl }}
{{- end }}

{{/* MLflow's client credentials (read by the mlflow client itself) from the auth Secret. */}}
{{- define "graft.mlflowClientEnv" -}}
- name: MLFLOW_TRACKING_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.mlflow.auth.existingSecret }}
      key: {{ .Values.mlflow.auth.usernameKey }}
- name: MLFLOW_TRACKING_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.mlflow.auth.existingSecret }}
      key: {{ .Values.mlflow.auth.passwordKey }}
{{- end }}

{{/*
Token auth on a Ray cluster. KubeRay gives the Ray containers, their wait-gcs-ready init
containers, the autoscaler and a RayJob's submitter RAY_AUTH_MODE=token and RAY_AUTH_TOKEN from
the Secret's key auth_token; with secretName set it creates no Secret of its own.
*/}}
{{- define "graft.rayAuthOptions" -}}
mode: token
secretName: {{ .Values.rayAuth.secretName | quote }}
{{- end }}

{{/*
The labels of Ray pods that the Ray NetworkPolicy selects (graft.config's RAY_NODE_LABEL and
RAY_SUBMITTER_LABEL: Graft's own RayJobs carry the same).
*/}}
{{- define "graft.rayNodeLabel" -}}
graft.dev/ray: node
{{- end }}

{{- define "graft.raySubmitterLabel" -}}
graft.dev/ray: submitter
{{- end }}

{{/* Environment shared by Ray containers: where MLflow is. */}}
{{- define "graft.rayEnv" -}}
{{- if .Values.mlflow.enabled }}
- name: MLFLOW_TRACKING_URI
  value: {{ include "graft.mlflow.url" . | quote }}
{{- /* Ray workers log to MLflow (address mode), which answers 401 without a user. */}}
{{ include "graft.mlflowClientEnv" . }}
{{- end }}
{{- /* The S3 keys, for Ray Train's checkpoints and Tune's state on S3: the filesystem the
driver pickles for the workers carries no keys (it would put them into tuner.pkl), so each Ray
process reads its own. Optional: a cluster that keeps nothing on S3 needs no Secret. */}}
{{- with .Values.mlflow.artifacts }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .accessKeyIdKey }}
      optional: true
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .secretAccessKeyKey }}
      optional: true
- name: AWS_DEFAULT_REGION
  value: {{ .region | quote }}
{{- with .endpointUrl }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- end }}
- name: RAY_USAGE_STATS_ENABLED
  value: "0"
- name: HOME
  value: /home/graft
{{- end }}

{{/* Writable scratch for containers with a read-only root filesystem. */}}
{{- define "graft.rayVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /home/graft
- name: dshm
  mountPath: /dev/shm
{{- end }}

{{- define "graft.rayVolumes" -}}
- name: tmp
  emptyDir: {}
- name: home
  emptyDir: {}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.rayCluster.shmSize }}
{{- end }}

{{/*
A Ray pod template (head or worker). Pass a dict:
  root: the chart context; name: container name; image: {repository, tag, pullPolicy};
  resources; nodeSelector; tolerations; component: label value; head: bool;
  apiAccess: bool (the head's autoscaler sidecar talks to the API server with the service
  account KubeRay creates for it; every other Ray pod gets no token).
*/}}
{{- define "graft.rayPodTemplate" -}}
{{- $root := .root -}}
metadata:
  labels:
    {{- include "graft.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
    {{- /* Ray workers log to MLflow, so they count as pipeline pods for the NetworkPolicy. */}}
    {{ $root.Values.pipelinePodLabel.key }}: {{ $root.Values.pipelinePodLabel.value | quote }}
    {{ include "graft.rayNodeLabel" $root }}
spec:
  {{- if not .apiAccess }}
  automountServiceAccountToken: false
  {{- end }}
  securityContext:
    {{- include "graft.podSecurityContext" $root | nindent 4 }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ .name }}
      image: {{ include "graft.image" .image | quote }}
      imagePullPolicy: {{ .image.pullPolicy }}
      env:
        {{- include "graft.rayEnv" $root | trim | nindent 8 }}
      {{- if .head }}
      ports:
        - name: gcs
          containerPort: 6379
        - name: dashboard
          containerPort: 8265
        - name: client
          containerPort: 10001
      {{- end }}
      securityContext:
        {{- include "graft.containerSecurityContext" (list $root true) | nindent 8 }}
      resources:
        {{- toYaml .resources | nindent 8 }}
      volumeMounts:
        {{- include "graft.rayVolumeMounts" $root | nindent 8 }}
  volumes:
    {{- include "graft.rayVolumes" $root | nindent 4 }}
  {{- with .nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* rayStartParams as a YAML map of strings (KubeRay requires string values). */}}
{{- define "graft.rayStartParams" -}}
{{- if . }}
{{- range $k, $v := . }}
{{ $k }}: {{ $v | toString | quote }}
{{- end }}
{{- else -}}
{}
{{- end }}
{{- end }}

{{- define "graft.serving.fullname" -}}
{{- printf "%s-serving" (include "graft.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The MLflow server `graft serve` downloads the model from: serving.trackingUri, else the chart's. */}}
{{- define "graft.serving.trackingUri" -}}
{{- if .Values.serving.trackingUri }}
{{- .Values.serving.trackingUri }}
{{- else if .Values.mlflow.enabled }}
{{- include "graft.mlflow.url" . }}
{{- else }}
{{- fail "serving.trackingUri is required when mlflow.enabled=false: the server downloads the model from MLflow" }}
{{- end }}
{{- end }}
