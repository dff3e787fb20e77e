{{/*
The guard's config.toml, rendered from values. Strings and lists go through toJson: a JSON
string is a valid TOML basic string and a JSON list of strings a valid TOML array. The Redis
URL is never written here (it may hold a password): the pod gets it as the env variable
HTI_GUARD_REPLAY__REDIS_URL from a Secret.
*/}}
{{- define "hti-guard.configToml" -}}
# hti-guard configuration, rendered by the {{ include "hti-guard.chart" . }} chart
# (release {{ .Release.Name }}, mode {{ .Values.mode }}). Edit the chart values, not this file.
listen = "0.0.0.0:8080"
admin_listen = "0.0.0.0:9090"
upstream = {{ include "hti-guard.upstream" . | toJson }}
shutdown_grace = {{ .Values.shutdownGrace | toString | toJson }}
{{- if .Values.workers }}
workers = {{ .Values.workers | int }}
{{- end }}

[launch]
paths = {{ .Values.launch.paths | toJson }}
audience = {{ .Values.launch.audience | toJson }}
token_fields = {{ .Values.launch.tokenFields | toJson }}
methods = {{ .Values.launch.methods | toJson }}
max_lifetime = {{ .Values.launch.maxLifetime | toString | toJson }}
clock_skew = {{ .Values.launch.clockSkew | toString | toJson }}
hti_versions = {{ .Values.launch.htiVersions | toJson }}
max_body = {{ .Values.launch.maxBody | toString | toJson }}
{{- range .Values.issuers }}

[[issuers]]
iss = {{ .iss | toJson }}
jwks_url = {{ .jwksUrl | toJson }}
{{- with .algorithms }}
algorithms = {{ . | toJson }}
{{- end }}
{{- end }}

[keys]
refresh_min = {{ .Values.keys.refreshMin | toString | toJson }}
refresh_max = {{ .Values.keys.refreshMax | toString | toJson }}
unknown_kid_cooldown = {{ .Values.keys.unknownKidCooldown | toString | toJson }}
fetch_timeout = {{ .Values.keys.fetchTimeout | toString | toJson }}
max_stale = {{ .Values.keys.maxStale | toString | toJson }}

[replay]
store = {{ .Values.replay.store | toJson }}
max_entries = {{ .Values.replay.maxEntries | int64 }}
{{- if eq .Values.replay.store "redis" }}
# redis_url: from the environment (HTI_GUARD_REPLAY__REDIS_URL, Secret {{ include "hti-guard.redisSecretName" . }}, key {{ include "hti-guard.redisSecretKey" . }})
{{- end }}
redis_timeout = {{ .Values.replay.redis.timeout | toString | toJson }}
key_prefix = {{ .Values.replay.redis.keyPrefix | toJson }}

[timeouts]
request_headers = {{ .Values.timeouts.requestHeaders | toString | toJson }}
idle = {{ .Values.timeouts.idle | toString | toJson }}
request_body = {{ .Values.timeouts.requestBody | toString | toJson }}
upstream_connect = {{ .Values.timeouts.upstreamConnect | toString | toJson }}
upstream_response = {{ .Values.timeouts.upstreamResponse | toString | toJson }}
{{- if or .Values.limits.maxConnections .Values.limits.maxMemory }}

[limits]
{{- if .Values.limits.maxConnections }}
max_connections = {{ .Values.limits.maxConnections | int }}
{{- end }}
{{- if .Values.limits.maxMemory }}
max_memory = {{ .Values.limits.maxMemory | toString | toJson }}
{{- end }}
{{- end }}
{{- if .Values.tls.enabled }}

[tls]
cert_file = {{ printf "%s/%s" (include "hti-guard.secretsDir" .) .Values.tls.certFile | toJson }}
key_file = {{ printf "%s/%s" (include "hti-guard.secretsDir" .) .Values.tls.keyFile | toJson }}
{{- end }}
{{- end }}
