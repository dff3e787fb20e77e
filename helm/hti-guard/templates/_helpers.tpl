{{/*
Expand the name of the chart.
*/}}
{{- define "hti-guard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "hti-guard.fullname" -}}
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

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "hti-guard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "hti-guard.labels" -}}
helm.sh/chart: {{ include "hti-guard.chart" . }}
{{ include "hti-guard.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels
*/}}
{{- define "hti-guard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hti-guard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "hti-guard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hti-guard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The guard's upstream: the app container on localhost in sidecar mode, the configured Service
in standalone mode.
*/}}
{{- define "hti-guard.upstream" -}}
{{- if eq .Values.mode "sidecar" }}
{{- printf "http://127.0.0.1:%d" (int .Values.app.port) }}
{{- else }}
{{- required "upstream is required in standalone mode (e.g. http://my-module.default.svc:8080)" .Values.upstream }}
{{- end }}
{{- end }}

{{/*
shutdownGrace ("20s", "1m") in whole seconds.
*/}}
{{- define "hti-guard.shutdownGraceSeconds" -}}
{{- $grace := toString .Values.shutdownGrace }}
{{- if not (regexMatch "^[0-9]+[sm]$" $grace) }}
{{- fail (printf "shutdownGrace %q: use whole seconds or minutes, e.g. \"20s\" or \"1m\"" $grace) }}
{{- end }}
{{- $n := int (trimSuffix "s" (trimSuffix "m" $grace)) }}
{{- if hasSuffix "m" $grace }}{{ mul $n 60 }}{{ else }}{{ $n }}{{ end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the value, or shutdownGrace + 10s; always above shutdownGrace.
*/}}
{{- define "hti-guard.terminationGracePeriodSeconds" -}}
{{- $grace := int (include "hti-guard.shutdownGraceSeconds" .) }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $grace 10 }}
{{- else }}
{{- $tgps := int .Values.terminationGracePeriodSeconds }}
{{- if le $tgps $grace }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than shutdownGrace (%ds), or the pod is killed while the guard drains" $tgps $grace) }}
{{- end }}
{{- $tgps }}
{{- end }}
{{- end }}

{{/*
Whether more than one guard pod can run: several replicas, or an autoscaler.
*/}}
{{- define "hti-guard.multiReplica" -}}
{{- if or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/*
Name of the Secret holding the Redis URL, and its key.
*/}}
{{- define "hti-guard.redisSecretName" -}}
{{- if .Values.replay.redis.existingSecret }}
{{- .Values.replay.redis.existingSecret }}
{{- else }}
{{- printf "%s-redis" (include "hti-guard.fullname" .) }}
{{- end }}
{{- end }}

{{- define "hti-guard.redisSecretKey" -}}
{{- if .Values.replay.redis.existingSecret }}
{{- .Values.replay.redis.existingSecretKey }}
{{- else }}
{{- print "redis-url" }}
{{- end }}
{{- end }}

{{/*
Name of the Secret the chart creates for secrets.files.
*/}}
{{- define "hti-guard.filesSecretName" -}}
{{- printf "%s-files" (include "hti-guard.fullname" .) }}
{{- end }}

{{/*
Whether the pod mounts anything at /etc/hti-guard/secrets.
*/}}
{{- define "hti-guard.hasSecretFiles" -}}
{{- if or .Values.secrets.files .Values.secrets.existingSecret .Values.tls.existingSecret }}true{{ end }}
{{- end }}

{{/*
Where the guard finds its files.
*/}}
{{- define "hti-guard.configDir" -}}/etc/hti-guard{{- end }}
{{- define "hti-guard.secretsDir" -}}/etc/hti-guard/secrets{{- end }}

{{/*
Checks across values that the schema cannot express; rendered (as nothing) by every
workload template, so a bad combination fails the whole render with a clear message.
*/}}
{{- define "hti-guard.validate" -}}
{{- if and (include "hti-guard.multiReplica" .) (ne .Values.replay.store "redis") }}
{{- fail (printf "replay.store is %q but %s: single use of a launch token needs a store every replica shares. Set replay.store=redis with replay.redis.url (or replay.redis.existingSecret), or run one replica." .Values.replay.store (ternary "autoscaling.enabled is true" (printf "replicaCount is %d" (int .Values.replicaCount)) .Values.autoscaling.enabled)) }}
{{- end }}
{{- if eq .Values.replay.store "redis" }}
{{- if and (not .Values.replay.redis.url) (not .Values.replay.redis.existingSecret) }}
{{- fail "replay.store is \"redis\": set replay.redis.url or replay.redis.existingSecret" }}
{{- end }}
{{- if and .Values.replay.redis.url .Values.replay.redis.existingSecret }}
{{- fail "set replay.redis.url or replay.redis.existingSecret, not both" }}
{{- end }}
{{- end }}
{{- if eq .Values.mode "sidecar" }}
{{- if not .Values.app.image.repository }}
{{- fail "mode is \"sidecar\": app.image.repository (the module application's image) is required" }}
{{- end }}
{{- if or (eq (int .Values.app.port) 8080) (eq (int .Values.app.port) 9090) }}
{{- fail (printf "app.port %d is taken by the guard in the same pod (8080 public, 9090 admin)" (int .Values.app.port)) }}
{{- end }}
{{- else }}
{{- $_ := include "hti-guard.upstream" . }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) }}
{{- if not (or .Values.secrets.existingSecret (and (hasKey .Values.secrets.files .Values.tls.certFile) (hasKey .Values.secrets.files .Values.tls.keyFile))) }}
{{- fail (printf "tls.enabled: set tls.existingSecret (a kubernetes.io/tls Secret), or provide %s and %s in secrets.files or secrets.existingSecret" .Values.tls.certFile .Values.tls.keyFile) }}
{{- end }}
{{- end }}
{{- $_ := include "hti-guard.terminationGracePeriodSeconds" . }}
{{- end }}
