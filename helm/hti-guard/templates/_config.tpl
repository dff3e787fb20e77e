{{/*
The guard's config.toml, rendered from values. Strings and lists go through toJson: a JSON
string is a valid TOML basic string and a JSON list of strings a valid TOML array. The Redis
URL is never written here (it may hold a password): the pod gets it as the env variable
HTI_GUARD_REPLAY__REDIS_URL from a Secret. Nor are the session keys or the module's private
keys: they are files mounted from Secrets, named here by path. Keys of [module],
[introspection], [session] and [shof] whose value is null are left out, so that the guard's
own defaults apply.
*/}}
{{- define "hti-guard.tomlKeys" -}}
{{- /* `key = value` lines for each (key, value) pair whose value is set (not null): the
  guard's own default applies to the rest. Values are strings, booleans or lists of strings;
  toJson writes each as valid TOML. */ -}}
{{- range . }}
{{- if not (kindIs "invalid" (index . 1)) }}
{{ index . 0 }} = {{ index . 1 | toJson }}
{{- end }}
{{- end }}
{{- end }}

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
trusted_proxies = {{ .Values.trustedProxies | default list | toJson }}

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
{{- with .jwksUrl }}
jwks_url = {{ . | toJson }}
{{- end }}
{{- if .introspect }}
introspect = true
{{- end }}
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
{{- if eq .Values.replay.redis.mode "single" }}
# redis_url: from the environment (HTI_GUARD_REPLAY__REDIS_URL, Secret {{ include "hti-guard.redisSecretName" . }}, key {{ include "hti-guard.redisSecretKey" . }})
{{- else }}
redis_mode = {{ .Values.replay.redis.mode | toJson }}
{{- if eq .Values.replay.redis.mode "sentinel" }}
sentinel_master = {{ .Values.replay.redis.sentinelMaster | toJson }}
{{- end }}
# redis_nodes: from the environment (HTI_GUARD_REPLAY__REDIS_NODES, Secret {{ include "hti-guard.redisSecretName" . }}, key {{ include "hti-guard.redisNodesSecretKey" . }})
{{- end }}
{{- end }}
redis_wait_replicas = {{ .Values.replay.redis.waitReplicas | int }}
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
{{- $dir := include "hti-guard.secretsDir" . }}
{{- $keyFiles := include "hti-guard.keyFiles" . | fromJsonArray }}
{{- $signing := list }}
{{- $decryption := list }}
{{- range $keyFiles }}
{{- $path := printf "%s/%s" $dir .name | toJson }}
{{- $entry := ternary (printf "{ file = %s, kid = %s }" $path (.kid | toJson)) $path (ne .kid "") }}
{{- if hasPrefix "module-signing-" .name }}{{ $signing = append $signing $entry }}{{ end }}
{{- if hasPrefix "module-decryption-" .name }}{{ $decryption = append $decryption $entry }}{{ end }}
{{- end }}
{{- with .Values.module }}
{{- $lines := include "hti-guard.tomlKeys" (list
  (list "client_id" .clientId)
  (list "generate" .generate)
  (list "jwks_path" .jwksPath)
  (list "jwks_max_age" .jwksMaxAge)) }}
{{- if or $lines $signing $decryption }}

[module]
{{- $lines }}
{{- with $signing }}
signing_key_files = [{{ join ", " . }}]
{{- end }}
{{- with $decryption }}
decryption_key_files = [{{ join ", " . }}]
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.introspection }}
{{- with include "hti-guard.tomlKeys" (list
  (list "fhir_base" .fhirBase)
  (list "endpoint" .endpoint)
  (list "token_endpoint" .tokenEndpoint)
  (list "assertion_audience" .assertionAudience)
  (list "assertion_alg" .assertionAlg)
  (list "all_issuers" .allIssuers)
  (list "timeout" .timeout)) }}

[introspection]
{{- . }}
{{- end }}
{{- end }}
{{- $secretFiles := dict }}
{{- range $keyFiles }}{{ if hasPrefix "session" .key }}{{ $_ := set $secretFiles .key (printf "%s/%s" $dir .name) }}{{ end }}{{ end }}
{{- with .Values.session }}
{{- with include "hti-guard.tomlKeys" (list
  (list "enabled" (.enabled | default nil))
  (list "cookie_name" .cookieName)
  (list "secure" .secure)
  (list "same_site" .sameSite)
  (list "landing" .landing)
  (list "protected" .protected)
  (list "public" .public)
  (list "case_insensitive_paths" .caseInsensitivePaths)
  (list "ttl" .ttl)
  (list "idle_timeout" .idleTimeout)
  (list "secret_file" (get $secretFiles "session.secret" | default nil))
  (list "previous_secret_file" (get $secretFiles "session.previousSecret" | default nil))
  (list "logout_path" .logoutPath)
  (list "logged_out" .loggedOut)) }}

[session]
{{- . }}
{{- end }}
{{- end }}
{{- if .Values.shof.enabled }}
{{- with .Values.shof }}

[shof]
{{- include "hti-guard.tomlKeys" (list
  (list "enabled" true)
  (list "fhir_base" .fhirBase)
  (list "redirect_uri" .redirectUri)
  (list "scope" .scope)
  (list "timeout" .timeout)
  (list "login_ttl" .loginTtl)
  (list "nonce" .nonce)) }}
{{- end }}
{{- end }}

{{- with include "hti-guard.tomlKeys" (list
  (list "portal_url" .Values.pages.portalUrl)
  (list "dir" (include "hti-guard.pagesDir" . | default nil))) }}

[pages]
{{- . }}
{{- end }}

[readiness]
startup_wait = {{ .Values.readiness.startupWait | toString | toJson }}

[audit]
format = {{ .Values.audit.format | toJson }}
{{- with .Values.audit.observer }}
observer = {{ . | toJson }}
{{- end }}
{{- if .Values.tls.enabled }}

[tls]
cert_file = {{ printf "%s/%s" (include "hti-guard.secretsDir" .) .Values.tls.certFile | toJson }}
key_file = {{ printf "%s/%s" (include "hti-guard.secretsDir" .) .Values.tls.keyFile | toJson }}
{{- end }}

[reload]
watch = {{ .Values.reload.watch | toJson }}
watch_interval = {{ .Values.reload.watchInterval | toString | toJson }}
{{- end }}

{{- /* What of the configuration a reload cannot apply (the guard's restart keys): with
  reload.watch, only a change of these rolls the pods. The pages too: the guard watches
  config.toml, not the template files mounted at pages.dir. */ -}}
{{- define "hti-guard.restartConfig" -}}
{{- $v := .Values -}}
{{- dict "upstream" (include "hti-guard.upstream" .) "shutdownGrace" $v.shutdownGrace "workers" $v.workers "replay" $v.replay "timeouts" $v.timeouts "limits" $v.limits "tls" $v.tls "pages" $v.pages | toJson -}}
{{- end }}
