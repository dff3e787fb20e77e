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
Whether config.toml is the operator's own (rawConfig or existingConfigMap) rather than
rendered from the values.
*/}}
{{- define "hti-guard.ownConfig" -}}
{{- if or .Values.rawConfig .Values.existingConfigMap }}true{{ end }}
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
The application's preStop sleep (sidecar mode): the value, or the guard's preStop sleep +
shutdownGrace, so that the application serves until the guard has drained.
*/}}
{{- define "hti-guard.appPreStopSleepSeconds" -}}
{{- if kindIs "invalid" .Values.app.preStopSleepSeconds }}
{{- add (int .Values.guard.preStopSleepSeconds) (int (include "hti-guard.shutdownGraceSeconds" .)) }}
{{- else }}
{{- int .Values.app.preStopSleepSeconds }}
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the value, or guard.preStopSleepSeconds + shutdownGrace + 10s;
always above the guard's preStop sleep + shutdownGrace (the preStop sleep counts against the
grace period) and, in sidecar mode, above the application's preStop sleep.
*/}}
{{- define "hti-guard.terminationGracePeriodSeconds" -}}
{{- $grace := int (include "hti-guard.shutdownGraceSeconds" .) }}
{{- $preStop := int .Values.guard.preStopSleepSeconds }}
{{- $need := add $grace $preStop }}
{{- $tgps := add $need 10 }}
{{- if not (kindIs "invalid" .Values.terminationGracePeriodSeconds) }}
{{- $tgps = int .Values.terminationGracePeriodSeconds }}
{{- if le $tgps $need }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than shutdownGrace (%ds) + guard.preStopSleepSeconds (%ds), or the pod is killed while the guard drains" $tgps $grace $preStop) }}
{{- end }}
{{- end }}
{{- if eq .Values.mode "sidecar" }}
{{- $app := int (include "hti-guard.appPreStopSleepSeconds" .) }}
{{- if ge $app $tgps }}
{{- fail (printf "app.preStopSleepSeconds (%d) must be shorter than terminationGracePeriodSeconds (%d), or the application is killed before it gets SIGTERM" $app $tgps) }}
{{- end }}
{{- end }}
{{- $tgps }}
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
Sentinel and cluster: the Secret key of the node list (a JSON array of URLs).
*/}}
{{- define "hti-guard.redisNodesSecretKey" -}}
{{- if .Values.replay.redis.existingSecret }}
{{- .Values.replay.redis.existingSecretNodesKey }}
{{- else }}
{{- print "redis-nodes" }}
{{- end }}
{{- end }}

{{/*
The directory of the page templates: pages.dir, or /etc/hti-guard/pages when the chart
mounts pages.templates; empty when neither.
*/}}
{{- define "hti-guard.pagesDir" -}}
{{- if .Values.pages.dir }}{{ .Values.pages.dir }}{{ else if .Values.pages.templates }}/etc/hti-guard/pages{{ end }}
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
{{- if and (include "hti-guard.multiReplica" .) (ne .Values.replay.store "redis") (not .Values.replay.allowMemoryWithReplicas) }}
{{- fail (printf "replay.store is %q but %s: single use of a launch token needs a store every replica shares, or a token can be used once per replica. Set replay.store=redis with replay.redis.url (or replay.redis.existingSecret), or run one replica, or accept it with replay.allowMemoryWithReplicas=true." .Values.replay.store (ternary "autoscaling.enabled is true" (printf "replicaCount is %d" (int .Values.replicaCount)) .Values.autoscaling.enabled)) }}
{{- end }}
{{- if and .Values.rawConfig .Values.existingConfigMap }}
{{- fail "set rawConfig or existingConfigMap, not both" }}
{{- end }}
{{- if eq .Values.replay.store "redis" }}
{{- $r := .Values.replay.redis }}
{{- if eq $r.mode "single" }}
{{- if and (not $r.url) (not $r.existingSecret) }}
{{- fail "replay.store is \"redis\": set replay.redis.url or replay.redis.existingSecret" }}
{{- end }}
{{- if and $r.url $r.existingSecret }}
{{- fail "set replay.redis.url or replay.redis.existingSecret, not both" }}
{{- end }}
{{- if $r.nodes }}
{{- fail "replay.redis.nodes is only for replay.redis.mode sentinel or cluster (single uses replay.redis.url)" }}
{{- end }}
{{- else }}
{{- if $r.url }}
{{- fail (printf "replay.redis.mode is %q: list the nodes in replay.redis.nodes (or replay.redis.existingSecret), not replay.redis.url" $r.mode) }}
{{- end }}
{{- if and (not $r.nodes) (not $r.existingSecret) }}
{{- fail (printf "replay.redis.mode is %q: set replay.redis.nodes or replay.redis.existingSecret" $r.mode) }}
{{- end }}
{{- if and $r.nodes $r.existingSecret }}
{{- fail "set replay.redis.nodes or replay.redis.existingSecret, not both" }}
{{- end }}
{{- end }}
{{- if and $r.sentinelMaster (ne $r.mode "sentinel") }}
{{- fail "replay.redis.sentinelMaster is only for replay.redis.mode sentinel" }}
{{- end }}
{{- end }}
{{- if eq .Values.mode "sidecar" }}
{{- if not .Values.app.image.repository }}
{{- fail "mode is \"sidecar\": app.image.repository (the module application's image) is required" }}
{{- end }}
{{- if or (eq (int .Values.app.port) 8080) (eq (int .Values.app.port) 9090) }}
{{- fail (printf "app.port %d is taken by the guard in the same pod (8080 public, 9090 admin)" (int .Values.app.port)) }}
{{- end }}
{{- else if not (include "hti-guard.ownConfig" .) }}
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
{{- if and .Values.serviceMonitor.enabled (not .Values.adminService.enabled) }}
{{- fail "serviceMonitor.enabled needs adminService.enabled: the ServiceMonitor scrapes the admin Service" }}
{{- end }}
{{- $_ := include "hti-guard.terminationGracePeriodSeconds" . }}
{{- end }}
