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
Name of the Secret the chart creates for secret values: the session keys and module keys
given inline (session.secret.value, module.signingKeys[].pem, ...).
*/}}
{{- define "hti-guard.keysSecretName" -}}
{{- printf "%s-keys" (include "hti-guard.fullname" .) }}
{{- end }}

{{/*
The secret files the guard reads besides secrets.files and TLS: the session keys and the
module's keys, as a JSON list of {name, key, value, existingSecret, existingSecretKey, kid}.
`name` is the file under the secrets directory, `key` names the setting for messages. An
entry has either a value (rendered into the keys Secret under `name`) or an existingSecret.
*/}}
{{- define "hti-guard.keyFiles" -}}
{{- $files := list }}
{{- range $setting, $name := dict "secret" "session-secret" "previousSecret" "session-previous-secret" }}
{{- $ref := index $.Values.session $setting | default dict }}
{{- if or $ref.value $ref.existingSecret }}
{{- $files = append $files (dict "name" $name "key" (printf "session.%s" $setting) "value" ($ref.value | default "") "existingSecret" ($ref.existingSecret | default "") "existingSecretKey" ($ref.existingSecretKey | default $name) "kid" "") }}
{{- end }}
{{- end }}
{{- range $kind, $list := dict "signing" .Values.module.signingKeys "decryption" .Values.module.decryptionKeys }}
{{- range $i, $k := $list }}
{{- $files = append $files (dict "name" (printf "module-%s-%d.pem" $kind $i) "key" (printf "module.%sKeys[%d]" $kind $i) "value" ($k.pem | default "") "existingSecret" ($k.existingSecret | default "") "existingSecretKey" ($k.existingSecretKey | default "") "kid" ($k.kid | default "")) }}
{{- end }}
{{- end }}
{{- $files | toJson }}
{{- end }}

{{/*
Whether the chart renders the keys Secret (some secret given as a value).
*/}}
{{- define "hti-guard.hasKeysSecret" -}}
{{- range include "hti-guard.keyFiles" . | fromJsonArray }}{{ if .value }}true{{ end }}{{ end }}
{{- end }}

{{/*
Whether the pod mounts anything at /etc/hti-guard/secrets.
*/}}
{{- define "hti-guard.hasSecretFiles" -}}
{{- if or .Values.secrets.files .Values.secrets.existingSecret .Values.tls.existingSecret (include "hti-guard.keyFiles" . | fromJsonArray) }}true{{ end }}
{{- end }}

{{/*
Where the guard finds its files.
*/}}
{{- /* The ConfigMap's directory: mounted whole (not by subPath, which a ConfigMap update
  never reaches), so that reload.watch sees the kubelet's swap. */ -}}
{{- define "hti-guard.configDir" -}}/etc/hti-guard/config{{- end }}
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
{{- range $setting := list "secret" "previousSecret" }}
{{- $ref := index $.Values.session $setting | default dict }}
{{- if and $ref.value $ref.existingSecret }}
{{- fail (printf "session.%s: set value or existingSecret, not both" $setting) }}
{{- end }}
{{- end }}
{{- $sessionSecret := or .Values.session.secret.value .Values.session.secret.existingSecret }}
{{- if and .Values.session.enabled (include "hti-guard.multiReplica" .) (not $sessionSecret) }}
{{- fail "session.enabled with more than one replica: set session.secret.value or session.secret.existingSecret, or each pod seals sessions with its own random key and the others refuse them" }}
{{- end }}
{{- $introspected := .Values.introspection.allIssuers }}
{{- range .Values.issuers }}{{ if .introspect }}{{ $introspected = true }}{{ end }}{{ end }}
{{- if and (or .Values.introspection.fhirBase .Values.introspection.endpoint) (not $introspected) }}
{{- fail "introspection is configured but no issuer has introspect: true (and introspection.allIssuers is not true)" }}
{{- end }}
{{- if and $introspected (not .Values.module.clientId) }}
{{- fail "token introspection (an issuer with introspect: true, or introspection.allIssuers) needs module.clientId" }}
{{- end }}
{{- if and $introspected (not (or .Values.module.signingKeys .Values.module.generate)) }}
{{- fail "token introspection needs a module signing key: module.signingKeys (or module.generate: true)" }}
{{- end }}
{{- $_ := include "hti-guard.terminationGracePeriodSeconds" . }}
{{- end }}
