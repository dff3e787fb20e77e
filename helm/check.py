#!/usr/bin/env python3
"""Check the hti-guard helm chart, offline, without a helm binary or a cluster.

Steps (one line each; exit 1 on any failure, 2 when a dependency is missing):

  deps        helm-python-sdk (the Helm 4 SDK as a shared library), kubernetes-validate,
              PyYAML, jsonschema and cryptography import; the guard binary exists.
  lint        helm lint --strict (kube 1.32) with every sample values file.
  schema      values.schema.json is a valid draft-07 schema; every sample passes it; the
              chart's defaults alone and every file in check-fixtures/bad/ are rejected,
              each with the error its `# expect:` line names.
  render      every sample renders; every file in check-fixtures/fail/ is refused by a
              template `fail`, with the message its `# expect:` line names.
  package     the chart's version and appVersion equal Cargo.toml's package version; the chart
              is packaged (the Helm SDK's `helm package`) into hti-guard-<version>.tgz, which
              holds the templates, schema and dashboard but not ci/, and renders every sample
              exactly as the chart directory does.
  coverage    the samples still exercise both modes with Redis, HPA and ServiceMonitor, the
              PrometheusRule, the FHIR audit format, the
              memory store, a PodDisruptionBudget, the dashboard, TLS, sessions and module keys
              from the chart's Secret and from existing Secrets, introspection and SHOF, Redis
              Sentinel and Cluster, the pages, the Ingress, both NetworkPolicies, envFrom,
              extra volume mounts, rawConfig, existingConfigMap and the memory store with
              several replicas acknowledged.
  kubernetes  every rendered object but the ServiceMonitor validates strictly against the
              Kubernetes 1.32 schemas bundled with kubernetes-validate.
  servicemon  the ServiceMonitor (a CRD, not in those schemas) checked here: a strict schema
              of the fields the chart uses, and its selector, port and namespace resolve.
  promrule    the PrometheusRule (a CRD too): a strict schema of the fields the chart uses,
              every alert with a severity and a summary, every hti_guard_* metric its
              expressions name exported by the guard (src/metrics.rs), and the job they
              select the Service the ServiceMonitor scrapes.
  wiring      the pieces fit: the public Service has only the http port and the admin Service
              only the admin port (no Service reaches the app's port), the NetworkPolicy admits
              only the public port from anyone and the admin port only from named peers (never
              the app's port), the Ingress reaches only the public Service, preStop sleeps fit
              in the grace period (the app's outlives the guard's drain), page templates are
              mounted where config.toml says; Service -> pod ports, probes on the admin port,
              config mount and
              HTI_GUARD_CONFIG, Secrets referenced exist, no session secret or private key in
              a ConfigMap, every secret file config.toml names is mounted, security context,
              grace period,
              sidecar upstream -> app port, HPA/PDB targets, dashboard JSON.
  guard       every rendered config.toml goes to `hti-guard check --offline --json --config
              FILE` with the guard container's environment as the pod would have it (the
              Redis URL from the rendered Secret, a placeholder for an existing Secret; the
              files config.toml names (TLS pair, session keys, module signing and decryption
              keys) from the chart's Secrets, or generated stand-ins when they live in an
              existing Secret, pointed to with HTI_GUARD_TLS__*, HTI_GUARD_SESSION__*_FILE,
              HTI_GUARD_MODULE__*_KEY_FILES). It must exit 0, and every value it reports must
              be the one the chart values meant (so a quoting slip or a key the guard reads
              differently fails); keys the guard has and the chart never sets are listed.
              A sample with shof.enabled is checked only when the binary knows [shof] (probed
              with `check --offline` on a tiny config); otherwise it is skipped with a note,
              after it was linted, schema-checked, rendered and wired like every other. The
              same for a sample that uses keys newer than some builds (replay.redis_mode,
              replay.sentinel_master, replay.redis_nodes, [pages]: ci/failover-pages-values.yaml
              and the redis-cluster sample) when the binary says the key is unknown. The
              Sentinel/cluster node list comes from the rendered Secret (a placeholder list for
              an existing one), the page templates from the rendered ConfigMap (pointed to with
              HTI_GUARD_PAGES__DIR), envFrom from rendered ConfigMaps and Secrets. A rawConfig
              is compared key by key with what the guard read; an existingConfigMap is not the
              chart's and skipped with a note.

Sample values: helm/hti-guard/ci/*.yaml, plus two made here so that no private key is kept in
the repository: "tls-files" (standalone-values.yaml with a generated TLS pair in secrets.files)
and "koppeltaal-inline-keys" (koppeltaal-session-values.yaml with generated module keys and
session keys given as values, so the chart renders them into its <fullname>-keys Secret),
and three variants: "memory-acknowledged" (minimal-values.yaml with two replicas on the
memory store and replay.allowMemoryWithReplicas), "existing-configmap" (minimal-values.yaml
with existingConfigMap) and "redis-cluster" (failover-pages-values.yaml on Redis Cluster with
the nodes in an existing Secret), each applied on top of the chart's defaults like
`helm install -f FILE`. The chart's defaults
alone do not render on purpose (the audience, an issuer and, in sidecar mode, the app image are
required), so "the default values" are checked as ci/minimal-values.yaml: the defaults plus
only those required values.

Environment: HTI_GUARD_BIN (default target/debug/hti-guard, relative to the repository root).
Install the Python packages with `python3 -m pip install helm-python-sdk kubernetes-validate`
(PyYAML and jsonschema come with kubernetes-validate; cryptography with the tests' pip step).
"""

from __future__ import annotations

import base64
import copy
import datetime
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CHART = HERE / "hti-guard"
SAMPLES = CHART / "ci"
BAD = HERE / "check-fixtures" / "bad"
FAIL = HERE / "check-fixtures" / "fail"
KUBE_VERSION = "1.32.0"
RELEASE = "demo"
NAMESPACE = "modules"
GUARD = "hti-guard"  # the guard's container name
CONFIG_PATH = "/etc/hti-guard/config/config.toml"
REDIS_URL_ENV = "HTI_GUARD_REPLAY__REDIS_URL"
REDIS_NODES_ENV = "HTI_GUARD_REPLAY__REDIS_NODES"
PAGES_DIR_ENV = "HTI_GUARD_PAGES__DIR"
# Stands in for a Sentinel/cluster node list kept in a Secret the chart does not render.
PLACEHOLDER_REDIS_NODES = json.dumps(
    ["redis://:placeholder@redis-0.invalid:6379", "redis://:placeholder@redis-1.invalid:6379"]
)
REDIS_ENVS = (REDIS_URL_ENV, REDIS_NODES_ENV)
# Stands in for a Redis URL kept in a Secret the chart does not render (existingSecret).
PLACEHOLDER_REDIS_URL = "redis://:placeholder@redis.invalid:6379/0"

failures = 0
passes = 0


def report(step: str, ok: bool, summary: str, details: list[str] | None = None) -> None:
    global failures, passes
    print(f"{'ok  ' if ok else 'FAIL'} {step:<10} {summary}", flush=True)
    passes += ok
    if not ok:
        failures += 1
        for line in details or []:
            for part in str(line).rstrip().splitlines():
                print(f"       {part}")


# --- dependencies ---------------------------------------------------------------------------


def load_deps():
    missing = []
    mods = {}
    for name, pip in [
        ("helm_python", "helm-python-sdk"),
        ("kubernetes_validate", "kubernetes-validate"),
        ("yaml", "PyYAML"),
        ("jsonschema", "jsonschema"),
        ("cryptography", "cryptography"),
    ]:
        try:
            mods[name] = __import__(name)
        except ImportError as e:
            missing.append(f"{pip} (import {name}: {e})")
    if missing:
        report(
            "deps",
            False,
            "missing Python packages: " + ", ".join(m.split(" ")[0] for m in missing),
            missing
            + ["install: python3 -m pip install helm-python-sdk kubernetes-validate cryptography"],
        )
        sys.exit(2)
    return mods


def guard_binary() -> Path:
    path = Path(os.environ.get("HTI_GUARD_BIN", "target/debug/hti-guard"))
    return path if path.is_absolute() else REPO / path


# --- helpers --------------------------------------------------------------------------------


def expectation(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    m = re.match(r"#\s*expect:\s*(.+)$", first)
    if not m:
        raise SystemExit(f"{path}: the first line must be '# expect: <text>'")
    return m.group(1).strip()


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def short(label: str) -> str:
    """A sample's short name: "helm/hti-guard/ci/sidecar-values.yaml" -> "sidecar"."""
    return Path(label).name.removesuffix(".yaml").removesuffix("-values") if "/" in label else label


def objects_of(yaml, rendered: dict[str, str]) -> list[dict]:
    """Every Kubernetes object of a render, NOTES.txt left out."""
    objs = []
    for name, text in sorted(rendered.items()):
        if name.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("namespace", NAMESPACE)
                objs.append(doc)
    return objs


def kinds(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o.get("kind") == kind]


def secret_value(objs: list[dict], name: str, key: str) -> str | None:
    for s in kinds(objs, "Secret"):
        if s["metadata"]["name"] != name:
            continue
        if key in (s.get("stringData") or {}):
            return s["stringData"][key]
        if key in (s.get("data") or {}):
            return base64.b64decode(s["data"][key]).decode()
    return None


def duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"([0-9]+)\s*(ms|s|m|h|d)", text)
    if not parts or "".join(a + b for a, b in parts) != text.replace(" ", ""):
        raise ValueError(f"unexpected duration {text!r}")
    return sum(int(n) * units[u] for n, u in parts)


def size_bytes(text) -> int:
    m = re.fullmatch(r"\s*([0-9]+)\s*(B|KiB|K|k|KB|kB|MiB|M|MB|GiB|G|GB)?\s*", str(text))
    if not m:
        raise ValueError(f"unexpected size {text!r}")
    unit = {None: 1, "B": 1, "MiB": 1 << 20, "M": 1 << 20, "MB": 1 << 20}
    unit.update({"GiB": 1 << 30, "G": 1 << 30, "GB": 1 << 30})
    return int(m.group(1)) * unit.get(m.group(2), 1024)


DURATION_KEYS = {
    "shutdown_grace",
    "launch.max_lifetime",
    "launch.clock_skew",
    "keys.refresh_min",
    "keys.refresh_max",
    "keys.unknown_kid_cooldown",
    "keys.fetch_timeout",
    "keys.max_stale",
    "replay.redis_timeout",
    "timeouts.request_headers",
    "timeouts.idle",
    "timeouts.request_body",
    "timeouts.upstream_connect",
    "timeouts.upstream_response",
    "module.jwks_max_age",
    "introspection.timeout",
    "session.ttl",
    "session.idle_timeout",
    "shof.timeout",
    "shof.login_ttl",
    "reload.watch_interval",
}

# The chart's values of [module], [introspection], [session] and [shof] (camelCase) and the
# guard's keys. A null value is not rendered: the guard's default applies.
def _pairs(*names: str) -> list[tuple[str, str]]:
    """camelCase value names with their snake_case config keys."""
    return [(n, re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), n)) for n in names]


OPTIONAL_KEYS = {
    "module": _pairs("clientId", "generate", "jwksPath", "jwksMaxAge"),
    "introspection": _pairs(
        "fhirBase",
        "endpoint",
        "tokenEndpoint",
        "assertionAudience",
        "assertionAlg",
        "allIssuers",
        "timeout",
    ),
    "session": _pairs(
        "cookieName",
        "secure",
        "sameSite",
        "landing",
        "protected",
        "public",
        "caseInsensitivePaths",
        "ttl",
        "idleTimeout",
        "logoutPath",
        "loggedOut",
    ),
    "shof": _pairs("fhirBase", "redirectUri", "scope", "timeout", "loginTtl", "nonce"),
}

# Files config.toml names that hold secrets, with the variable that points the guard at the
# check's copy: (section, key, variable, list of files?).
SECRET_FILE_KEYS = [
    ("tls", "cert_file", "HTI_GUARD_TLS__CERT_FILE", False),
    ("tls", "key_file", "HTI_GUARD_TLS__KEY_FILE", False),
    ("session", "secret_file", "HTI_GUARD_SESSION__SECRET_FILE", False),
    ("session", "previous_secret_file", "HTI_GUARD_SESSION__PREVIOUS_SECRET_FILE", False),
    ("module", "signing_key_files", "HTI_GUARD_MODULE__SIGNING_KEY_FILES", True),
    ("module", "decryption_key_files", "HTI_GUARD_MODULE__DECRYPTION_KEY_FILES", True),
]


def shof_enabled(values: dict) -> bool:
    return bool((values.get("shof") or {}).get("enabled"))


def expected_config(v: dict, guard: dict) -> dict:
    """What the guard should end up with, key by key as `check --json` names them, from the
    chart's (merged) values and the guard container's plain env overrides."""
    if v.get("rawConfig"):
        return expected_from_toml(tomllib.loads(v["rawConfig"]), guard)
    launch, keys, replay, timeouts = v["launch"], v["keys"], v["replay"], v["timeouts"]
    audience = launch["audience"] if isinstance(launch["audience"], list) else [launch["audience"]]
    upstream = f"http://127.0.0.1:{v['app']['port']}" if v["mode"] == "sidecar" else v["upstream"]
    want = {
        "listen": "0.0.0.0:8080",
        "admin_listen": "0.0.0.0:9090",
        "upstream": upstream,
        "shutdown_grace": v["shutdownGrace"],
        "trusted_proxies": [
            p if "/" in p else p + ("/128" if ":" in p else "/32")
            for p in v.get("trustedProxies") or []
        ],
        "launch.paths": launch["paths"],
        "launch.audience": audience,
        "launch.token_fields": launch["tokenFields"],
        "launch.methods": launch["methods"],
        "launch.max_lifetime": launch["maxLifetime"],
        "launch.clock_skew": launch["clockSkew"],
        "launch.hti_versions": launch["htiVersions"],
        "launch.max_body": launch["maxBody"],
        "issuers": [
            {
                "iss": i["iss"],
                "jwks_url": None if i.get("introspect") else i["jwksUrl"],
                "introspect": bool(i.get("introspect")),
                **({"algorithms": i["algorithms"]} if i.get("algorithms") else {}),
            }
            for i in v["issuers"]
        ],
        "keys.refresh_min": keys["refreshMin"],
        "keys.refresh_max": keys["refreshMax"],
        "keys.unknown_kid_cooldown": keys["unknownKidCooldown"],
        "keys.fetch_timeout": keys["fetchTimeout"],
        "keys.max_stale": keys["maxStale"],
        "replay.store": replay["store"],
        "replay.max_entries": replay["maxEntries"],
        "replay.redis_timeout": replay["redis"]["timeout"],
        "replay.key_prefix": replay["redis"]["keyPrefix"],
        "timeouts.request_headers": timeouts["requestHeaders"],
        "timeouts.idle": timeouts["idle"],
        "timeouts.request_body": timeouts["requestBody"],
        "timeouts.upstream_connect": timeouts["upstreamConnect"],
        "timeouts.upstream_response": timeouts["upstreamResponse"],
        "readiness.startup_wait": v["readiness"]["startupWait"],
        "audit.format": v["audit"]["format"],
        "reload.watch": v["reload"]["watch"],
        "reload.watch_interval": v["reload"]["watchInterval"],
    }
    if v["audit"].get("observer"):
        want["audit.observer"] = v["audit"]["observer"]
    if v.get("workers"):
        want["workers"] = v["workers"]
    if v["limits"].get("maxConnections"):
        want["limits.max_connections"] = v["limits"]["maxConnections"]
    if v["limits"].get("maxMemory"):
        memory = v["limits"]["maxMemory"]
        want["limits.max_memory"] = None if memory == "off" else memory
    session_on = bool(v["session"]["enabled"])
    introspected = bool(v["introspection"].get("allIssuers")) or any(
        i.get("introspect") for i in v["issuers"]
    )
    for section, pairs in OPTIONAL_KEYS.items():
        if section == "session" and not session_on:
            continue  # the guard reports no session keys while sessions are off
        if section == "introspection" and not introspected:
            continue
        if section == "shof" and not shof_enabled(v):
            continue
        for name, key in pairs:
            if v[section].get(name) is not None:
                want[f"{section}.{key}"] = v[section][name]
    want["session.enabled"] = session_on
    if shof_enabled(v):
        want["shof.enabled"] = True
    sources = {k: "file" for k in want}
    if not v["issuers"]:
        sources["issuers"] = "default"  # no [[issuers]] rendered (SHOF needs none)
    if not session_on:
        sources.pop("session.enabled")
    for setting, key in [("secret", "secret"), ("previousSecret", "previous_secret")]:
        ref = v["session"][setting]
        if session_on and (ref.get("value") or ref.get("existingSecret")):
            # Reported as set but never shown; the file is the check's copy (from env).
            want[f"session.{key}"] = "(set, not shown)"
            want[f"session.{key}_file"] = "(set)"
            sources[f"session.{key}_file"] = "env"
    for name, key in [
        ("signingKeys", "signing_key_files"),
        ("decryptionKeys", "decryption_key_files"),
    ]:
        if v["module"].get(name):
            # "<file> (kid <kid>)": the check's copy, the kid when the values give one.
            want[f"module.{key}"] = [k.get("kid") for k in v["module"][name]]
            sources[f"module.{key}"] = "env"
    redis = replay["redis"]
    if replay["store"] == "redis" and redis["mode"] != "single":
        want["replay.redis_mode"] = redis["mode"]
        if redis["mode"] == "sentinel":
            want["replay.sentinel_master"] = redis["sentinelMaster"]
        # Masked by check; the count: the values' list, or the placeholder's two.
        want["replay.redis_nodes"] = len(redis.get("nodes") or json.loads(PLACEHOLDER_REDIS_NODES))
        sources["replay.redis_mode"] = "file"
        sources["replay.redis_nodes"] = "env"
    elif replay["store"] == "redis":
        sources["replay.redis_url"] = "env"
    if v["pages"].get("portalUrl"):
        want["pages.portal_url"] = v["pages"]["portalUrl"]
        sources["pages.portal_url"] = "file"
    if v["pages"].get("dir") or v["pages"]["templates"]:
        sources["pages.dir"] = "env"  # the check's copy of the templates
    if v["tls"]["enabled"]:
        sources["tls.cert_file"] = sources["tls.key_file"] = "env"  # the check's stand-in paths
    for e in guard.get("env", []):
        name = e["name"]
        if name.startswith("HTI_GUARD_") and "value" in e:
            key = name.removeprefix("HTI_GUARD_").lower().replace("__", ".")
            if key in DURATION_KEYS or key in want:
                want[key] = e["value"]
                sources[key] = "env"
    return want, sources


def expected_from_toml(config: dict, guard: dict) -> tuple[dict, dict]:
    """What the guard should read from a config.toml of the operator's own (rawConfig): each
    key the file sets, from the file; secret files from the check's copies (env); the
    guard container's plain HTI_GUARD_* values over them."""
    want = {}
    for key, value in config.items():
        if key == "issuers":
            want["issuers"] = value
        elif isinstance(value, dict):
            for sub, inner in value.items():
                want[f"{key}.{sub}"] = inner
        else:
            want[key] = value
    if isinstance(want.get("launch.audience"), str):
        want["launch.audience"] = [want["launch.audience"]]
    if "trusted_proxies" in want:
        want["trusted_proxies"] = [
            p if "/" in p else p + ("/128" if ":" in p else "/32") for p in want["trusted_proxies"]
        ]
    sources = {k: "file" for k in want}
    for section, key, _, _ in SECRET_FILE_KEYS:
        if f"{section}.{key}" in want:
            del want[f"{section}.{key}"]
            sources[f"{section}.{key}"] = "env"
    for e in guard.get("env", []):
        name = e["name"]
        if name in REDIS_ENVS:
            sources[name.removeprefix("HTI_GUARD_").lower().replace("__", ".")] = "env"
        elif name.startswith("HTI_GUARD_") and "value" in e:
            key = name.removeprefix("HTI_GUARD_").lower().replace("__", ".")
            if key in DURATION_KEYS or key in want:
                want[key] = e["value"]
                sources[key] = "env"
    return want, sources


def same(key: str, want, got) -> bool:
    if key in DURATION_KEYS:
        return duration_seconds(str(want)) == duration_seconds(str(got))
    if key == "launch.max_body":
        return size_bytes(want) == size_bytes(got)
    if key == "limits.max_memory" and want is not None and got is not None:
        return size_bytes(want) == size_bytes(got)
    if key == "upstream":
        return str(got).rstrip("/") == str(want).rstrip("/")
    if key == "issuers":
        return len(want) == len(got) and all(
            all(g.get(k) == w[k] for k in w) for w, g in zip(want, got)
        )
    if key == "replay.redis_nodes":
        return isinstance(got, list) and len(got) == want
    if key == "launch.methods":
        return [m.upper() for m in want] == [m.upper() for m in got]
    if key in ("module.signing_key_files", "module.decryption_key_files"):
        # want: the kids the values give (None: the thumbprint); got: "<file> (kid <kid>)".
        return len(want) == len(got) and all(
            re.fullmatch(r".+ \(kid .+\)", g) and (w is None or g.endswith(f"(kid {w})"))
            for w, g in zip(want, got)
        )
    return want == got


def compare_report(report_json: dict, want: dict, sources: dict) -> tuple[list[str], set[str]]:
    """Differences between what the chart meant and what the guard read; and the keys the
    guard knows that the chart leaves to their defaults."""
    problems = []
    got = report_json["config"]["values"]
    for key, value in want.items():
        if key not in got:
            problems.append(f"{key}: the guard has no such key")
        elif not same(key, value, got[key]["value"]):
            problems.append(
                f"{key}: chart values say {value!r}, the guard read {got[key]['value']!r}"
            )
    for key, source in sources.items():
        if key in got and got[key]["source"] != source:
            problems.append(f"{key}: from {got[key]['source']}, expected from {source}")
    unset = {
        k
        for k, g in got.items()
        if g["source"] == "default"
        and k not in sources
        and k not in ("tls.cert_file", "tls.key_file", "replay.redis_url")
        and not k.endswith("secret")
    }
    return problems, unset


def self_signed_pair() -> tuple[str, str]:
    """A throwaway P-256 certificate and key, for TLS files kept in Secrets the chart does not
    render (the guard loads and matches them even with --offline)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hti-guard.chart-check.invalid")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("hti-guard.chart-check.invalid")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM).decode(),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
    )


# --- the ServiceMonitor's shape -------------------------------------------------------------

# The fields of monitoring.coreos.com/v1 ServiceMonitor that the chart renders, strict: a typo
# or a misplaced field fails here as it would against the CRD's schema.
_str = {"type": "string", "minLength": 1}
_labels = {"type": "object", "additionalProperties": {"type": "string"}}
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": _str,
                "namespace": _str,
                "labels": _labels,
                "annotations": _labels,
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": _str},
                    },
                },
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["matchLabels"],
                    "properties": {"matchLabels": _labels},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": _str,
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {
                                "type": "string",
                                "pattern": "^(0|(([0-9]+)(ms|s|m|h))+)$",
                            },
                            "scrapeTimeout": {
                                "type": "string",
                                "pattern": "^(0|(([0-9]+)(ms|s|m|h))+)$",
                            },
                        },
                    },
                },
            },
        },
    },
}


# --- the steps ------------------------------------------------------------------------------


def step_lint(helm, yaml, samples):
    problems = []
    for label, values in samples:
        result = helm.lint(
            str(CHART), values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}"
        )
        for msg in result.get("messages", []):
            # 1 = info ("icon is recommended"); 2 = warning; 3 = error.
            if msg.get("severity", 0) >= 2:
                problems.append(f"{label}: {msg.get('path')}: {msg.get('error')}")
        problems += [
            f"{label}: {e}" for e in result.get("errors", []) if not any(e in p for p in problems)
        ]
    report(
        "lint",
        not problems,
        f"helm lint --strict (kube {KUBE_VERSION}) with {len(samples)} sample values files",
        problems,
    )


def step_schema(helm, jsonschema, yaml, chart, samples):
    problems = []
    schema = json.loads((CHART / "values.schema.json").read_text())
    try:
        jsonschema.Draft7Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        problems.append(f"values.schema.json is not a valid draft-07 schema: {e.message}")
    if schema.get("$schema") != "http://json-schema.org/draft-07/schema#":
        problems.append("values.schema.json: $schema is not draft-07")
    for label, values in samples:
        try:
            chart.validate_schema(values)
        except helm.HelmValuesError as e:
            problems.append(f"{label} rejected: {e}")
    rejected = 0
    # The defaults alone must be refused: audience and issuers are required.
    try:
        chart.validate_schema({})
        problems.append(
            "the chart's default values alone passed the schema (launch.audience and issuers are required)"
        )
    except helm.HelmValuesError as e:
        lacking = [n for n in ("/launch/audience", "/issuers") if n not in str(e)]
        problems += [f"default values: rejected, but not for {n}: {e}" for n in lacking]
        rejected += not lacking
    bad = sorted(BAD.glob("*.yaml"))
    for path in bad:
        expect = expectation(path)
        try:
            chart.validate_schema(yaml.safe_load(path.read_text()) or {})
            problems.append(f"{rel(path)}: accepted by the schema, should be rejected ({expect})")
        except helm.HelmValuesError as e:
            if expect not in str(e):
                problems.append(
                    f"{rel(path)}: rejected, but the error does not mention {expect!r}: {e}"
                )
            else:
                rejected += 1
    report(
        "schema",
        not problems,
        f"draft-07 schema valid; {len(samples)} samples pass; defaults alone and {len(bad)} bad values files rejected ({rejected}/{len(bad) + 1} for the expected reason)",
        problems,
    )


def step_render(helm, yaml, chart, samples):
    problems = []
    renders = {}
    for label, values in samples:
        try:
            rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE)
            renders[label] = (chart.merge_values(values), objects_of(yaml, rendered), rendered)
        except (helm.HelmError, yaml.YAMLError) as e:
            problems.append(f"{label}: {e}")
    refused = 0
    fails = sorted(FAIL.glob("*.yaml"))
    for path in fails:
        expect = expectation(path)
        values = yaml.safe_load(path.read_text()) or {}
        try:
            chart.validate_schema(values)
        except helm.HelmValuesError as e:
            problems.append(
                f"{rel(path)}: rejected by the schema already, should reach the template fail: {e}"
            )
            continue
        try:
            chart.render(values, name=RELEASE, namespace=NAMESPACE)
            problems.append(f"{rel(path)}: rendered, should be refused ({expect})")
        except helm.HelmError as e:
            if expect in str(e):
                refused += 1
            else:
                problems.append(f"{rel(path)}: refused, but not with {expect!r}: {e}")
    counts = ", ".join(f"{short(label)} ({len(o)} objects)" for label, (_, o, _) in renders.items())
    report(
        "render",
        not problems,
        f"{len(renders)}/{len(samples)} samples render: {counts}; {refused}/{len(fails)} fail/ values refused by the templates",
        problems,
    )
    return renders


def step_kubernetes(kv, renders):
    problems = []
    checked = 0
    skipped = set()
    for label, (_, objs, _) in renders.items():
        for obj in objs:
            ident = f"{label}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
            if obj.get("kind") in ("ServiceMonitor", "PrometheusRule"):
                skipped.add(obj["kind"])
                continue
            try:
                kv.validate(copy.deepcopy(obj), KUBE_VERSION, strict=True)
                checked += 1
            except kv.ValidationError as e:
                where = ".".join(str(p) for p in e.path)
                problems.append(f"{ident}: {where}: {e.message}")
            except kv.SchemaNotFoundError as e:
                problems.append(f"{ident}: {e.message}")
    report(
        "kubernetes",
        not problems,
        f"{checked} objects valid against the Kubernetes {KUBE_VERSION} schemas, strict"
        + (
            f" ({', '.join(sorted(skipped))}: CRDs, checked in the next steps)" if skipped else ""
        ),
        problems,
    )


def step_servicemonitor(jsonschema, renders):
    problems = []
    count = 0
    validator = jsonschema.Draft7Validator(SERVICE_MONITOR_SCHEMA)
    for label, (_, objs, _) in renders.items():
        for sm in kinds(objs, "ServiceMonitor"):
            count += 1
            ident = f"{label}: ServiceMonitor/{sm['metadata']['name']}"
            for err in validator.iter_errors(sm):
                problems.append(f"{ident}: {'.'.join(map(str, err.path))}: {err.message}")
            if problems:
                continue
            spec = sm["spec"]
            names = spec.get("namespaceSelector", {}).get("matchNames")
            if names is not None and NAMESPACE not in names:
                problems.append(
                    f"{ident}: namespaceSelector does not include the release namespace"
                )
            if names is None and sm["metadata"].get("namespace") != NAMESPACE:
                problems.append(f"{ident}: in another namespace without a namespaceSelector")
            selector = spec["selector"]["matchLabels"]
            services = [
                s
                for s in kinds(objs, "Service")
                if selector.items() <= (s["metadata"].get("labels") or {}).items()
            ]
            if len(services) != 1:
                problems.append(f"{ident}: selector matches {len(services)} Services, expected 1")
                continue
            ports = {p.get("name") for p in services[0]["spec"]["ports"]}
            for ep in spec["endpoints"]:
                if ep["port"] not in ports:
                    problems.append(
                        f"{ident}: endpoint port {ep['port']!r} is not a port of the Service"
                    )
                if ep.get("path", "/metrics") != "/metrics":
                    problems.append(
                        f"{ident}: endpoint path {ep.get('path')!r}, the guard serves /metrics"
                    )
                if ep["port"] != "admin":
                    problems.append(
                        f"{ident}: endpoint port must be the admin port (metrics are served there)"
                    )
    if not any(kinds(o, "ServiceMonitor") for _, o, _ in renders.values()):
        problems.append("no sample renders a ServiceMonitor")
    report(
        "servicemon",
        not problems,
        f"{count} ServiceMonitors: strict shape of the fields used, selector -> Service, port admin, path /metrics (checked here: not in the Kubernetes schemas)",
        problems,
    )


# --- the PrometheusRule's shape ------------------------------------------------------------

_rule = {
    "type": "object",
    "additionalProperties": False,
    "required": ["expr"],
    "properties": {
        "alert": _str,
        "record": _str,
        "expr": {"type": ["string", "integer"]},
        "for": {"type": "string", "pattern": "^(([0-9]+)(ms|s|m|h|d|w|y))+$"},
        "labels": _labels,
        "annotations": _labels,
    },
}
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": SERVICE_MONITOR_SCHEMA["properties"]["metadata"],
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {"name": _str, "rules": {"type": "array", "items": _rule}},
                    },
                }
            },
        },
    },
}

# The alerts the chart itself renders.
CHART_ALERTS = {
    "HtiGuardIssuerKeysDown",
    "HtiGuardIssuerKeysStale",
    "HtiGuardReplayStoreDown",
    "HtiGuardReplayStoreErrors",
    "HtiGuardReplayStoreFilling",
    "HtiGuardAuthServerDown",
    "HtiGuardLaunchRejectionsHigh",
    "HtiGuardUpstream5xxHigh",
    "HtiGuardNotScraped",
}


def guard_metric_names() -> set[str]:
    """The metric families the guard registers (src/metrics.rs), with the series suffixes a
    histogram adds."""
    text = (REPO / "src" / "metrics.rs").read_text()
    names = set(re.findall(r'"(hti_guard_[a-z_]+)"', text))
    return names | {n + s for n in names for s in ("_bucket", "_sum", "_count")}


def step_prometheusrule(jsonschema, renders):
    problems = []
    count = 0
    validator = jsonschema.Draft7Validator(PROMETHEUS_RULE_SCHEMA)
    exported = guard_metric_names()
    for label, (_, objs, _) in renders.items():
        for pr in kinds(objs, "PrometheusRule"):
            count += 1
            ident = f"{label}: PrometheusRule/{pr['metadata']['name']}"
            for err in validator.iter_errors(pr):
                problems.append(f"{ident}: {'.'.join(map(str, err.path))}: {err.message}")
            if problems:
                continue
            rules = [r for g in pr["spec"]["groups"] for r in g["rules"]]
            alerts = {r.get("alert") for r in rules}
            if not CHART_ALERTS <= alerts:
                problems.append(f"{ident}: missing alerts {sorted(CHART_ALERTS - alerts)}")
            services = [s["metadata"]["name"] for s in kinds(objs, "Service")]
            for r in rules:
                name = r.get("alert") or r.get("record")
                expr = str(r["expr"])
                for metric in re.findall(r"\b(hti_guard_[a-z_]+)", expr):
                    if metric not in exported:
                        problems.append(f"{ident}: {name}: {metric} is not a metric of the guard")
                if r.get("alert") in CHART_ALERTS:
                    if not (r.get("labels") or {}).get("severity"):
                        problems.append(f"{ident}: {name}: no severity label")
                    if not (r.get("annotations") or {}).get("summary"):
                        problems.append(f"{ident}: {name}: no summary")
                    for job in re.findall(r'job="([^"]*)"', expr):
                        if job not in services:
                            problems.append(
                                f"{ident}: {name}: job {job!r} is not the Service the ServiceMonitor scrapes"
                            )
                    if f'namespace="{NAMESPACE}"' not in expr:
                        problems.append(f"{ident}: {name}: not limited to the release namespace")
    if not any(kinds(o, "PrometheusRule") for _, o, _ in renders.values()):
        problems.append("no sample renders a PrometheusRule")
    report(
        "promrule",
        not problems,
        f"{count} PrometheusRules: strict shape, {len(CHART_ALERTS)} chart alerts with severity and summary, every hti_guard_* metric exported by the guard, job -> Service, release namespace",
        problems,
    )


def step_coverage(renders):
    """The samples must keep exercising what the chart offers."""
    seen = {}
    for values, objs, _ in renders.values():
        mode = values.get("mode", "sidecar")
        has = lambda kind: bool(kinds(objs, kind))
        redis = any(e in json.dumps(kinds(objs, "Deployment")) for e in REDIS_ENVS)
        if redis and has("HorizontalPodAutoscaler") and has("ServiceMonitor"):
            seen[f"{mode}+redis+hpa+servicemonitor"] = True
        seen[f"{mode}+memory"] = seen.get(f"{mode}+memory") or not redis
        seen["pdb"] = seen.get("pdb") or has("PodDisruptionBudget")
        seen["dashboard"] = seen.get("dashboard") or any(
            c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
            for c in kinds(objs, "ConfigMap")
        )
        seen["tls"] = seen.get("tls") or "[tls]" in json.dumps(kinds(objs, "ConfigMap"))
        config = json.dumps(kinds(objs, "ConfigMap"))
        keys_secret = any(s["metadata"]["name"].endswith("-keys") for s in kinds(objs, "Secret"))
        existing_keys = any(
            k.get("existingSecret")
            for k in values["module"]["signingKeys"] + values["module"]["decryptionKeys"]
        )
        if values["session"]["enabled"] and "secret_file" in config:
            origin = "chart Secret" if keys_secret else "existing Secret"
            seen[f"session+secret from {origin}"] = True
        if "signing_key_files" in config:
            origin = "existing Secret" if existing_keys else "chart Secret"
            seen[f"module keys from {origin}"] = True
        seen["introspection"] = seen.get("introspection") or "[introspection]" in config
        seen["shof"] = seen.get("shof") or "[shof]" in config
        seen["prometheusrule"] = seen.get("prometheusrule") or has("PrometheusRule")
        seen["audit fhir"] = seen.get("audit fhir") or 'format = \\"fhir\\"' in config
        redis_mode = values["replay"]["redis"]["mode"] if redis else None
        if redis_mode in ("sentinel", "cluster"):
            seen[f"redis {redis_mode}"] = True
        pages = values["pages"]
        if pages["templates"]:
            seen["pages templates (chart ConfigMap)"] = True
        if pages.get("dir") and not pages["templates"]:
            seen["pages dir (own volume)"] = True
        policies = [n["metadata"]["name"] for n in kinds(objs, "NetworkPolicy")]
        admin_services = [
            s for s in kinds(objs, "Service") if s["metadata"]["name"].endswith("-admin")
        ]
        deployments = kinds(objs, "Deployment")
        multi = any(d["spec"].get("replicas", 1) > 1 for d in deployments) or has(
            "HorizontalPodAutoscaler"
        )
        for name, now in [
            ("ingress", has("Ingress")),
            ("networkpolicy", any(not n.endswith("-upstream") for n in policies)),
            ("upstream networkpolicy", any(n.endswith("-upstream") for n in policies)),
            ("no networkpolicy", not policies),
            ("admin service", bool(admin_services)),
            ("no admin service", not admin_services),
            ("envFrom", bool(values["guard"]["envFrom"]) and '"envFrom"' in json.dumps(deployments)),
            ("extraVolumeMounts", bool(values["guard"]["extraVolumeMounts"])),
            ("rawConfig", bool(values.get("rawConfig"))),
            ("existingConfigMap", bool(values.get("existingConfigMap"))),
            ("memory store with replicas acknowledged", multi and not redis),
        ]:
            seen[name] = seen.get(name) or now
    wanted = [
        "sidecar+redis+hpa+servicemonitor",
        "standalone+redis+hpa+servicemonitor",
        "sidecar+memory",
        "pdb",
        "dashboard",
        "tls",
        "session+secret from chart Secret",
        "session+secret from existing Secret",
        "module keys from chart Secret",
        "module keys from existing Secret",
        "introspection",
        "shof",
        "prometheusrule",
        "audit fhir",
        "redis sentinel",
        "redis cluster",
        "pages templates (chart ConfigMap)",
        "pages dir (own volume)",
        "ingress",
        "networkpolicy",
        "upstream networkpolicy",
        "no networkpolicy",
        "admin service",
        "no admin service",
        "envFrom",
        "extraVolumeMounts",
        "rawConfig",
        "existingConfigMap",
        "memory store with replicas acknowledged",
    ]
    missing = [w for w in wanted if not seen.get(w)]
    report(
        "coverage",
        not missing,
        "samples cover " + ", ".join(w for w in wanted if seen.get(w)),
        [f"no sample renders {m}" for m in missing],
    )


def pod_of(objs: list[dict]) -> tuple[dict, dict]:
    deployments = kinds(objs, "Deployment")
    if len(deployments) != 1:
        raise ValueError(f"{len(deployments)} Deployments, expected 1")
    return deployments[0], deployments[0]["spec"]["template"]


def guard_container(pod: dict) -> dict:
    found = [c for c in pod["spec"]["containers"] if c["name"] == GUARD]
    if len(found) != 1:
        raise ValueError(f"no container named {GUARD}")
    return found[0]


def config_toml(objs: list[dict], pod: dict, guard: dict) -> tuple[str, dict]:
    """The config.toml the guard reads: through HTI_GUARD_CONFIG, its mount, the ConfigMap."""
    env = {e["name"]: e.get("value") for e in guard.get("env", [])}
    path = env.get("HTI_GUARD_CONFIG")
    if path != CONFIG_PATH:
        raise ValueError(f"HTI_GUARD_CONFIG is {path!r}, expected {CONFIG_PATH}")
    # The ConfigMap's directory, mounted whole: a subPath mount never sees an update, and
    # reload.watch follows the kubelet's swap of the directory.
    folder, name = path.rsplit("/", 1)
    mount = next((m for m in guard.get("volumeMounts", []) if m["mountPath"] == folder), None)
    if mount is None:
        raise ValueError(f"nothing is mounted at {folder}")
    if "subPath" in mount:
        raise ValueError(f"{folder} is mounted by subPath, which a ConfigMap update never reaches")
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    cm_name = volume["configMap"]["name"]
    cm = next((c for c in kinds(objs, "ConfigMap") if c["metadata"]["name"] == cm_name), None)
    if cm is None:
        raise ExternalConfig(cm_name)
    text = cm["data"][name]
    return text, tomllib.loads(text)


class ExternalConfig(Exception):
    """config.toml lives in a ConfigMap the chart does not render (existingConfigMap)."""


def sleep_seconds(container: dict) -> int:
    """A container's preStop sleep in seconds (0: none)."""
    pre = (container.get("lifecycle") or {}).get("preStop") or {}
    if pre and "sleep" not in pre:
        raise ValueError(f"{container['name']}: a preStop that is not a sleep: {pre}")
    return int((pre.get("sleep") or {}).get("seconds", 0))


def check_network_policies(values, objs, labels, spec, need) -> None:
    """The pod's NetworkPolicy admits the public port (from anyone, or the named peers) and
    the admin port only from named peers, no other port (so never the app's); the upstream
    policy (standalone) admits only the guard's pods."""
    np_values = values["networkPolicy"]
    policies = kinds(objs, "NetworkPolicy")
    own = [
        n
        for n in policies
        if (n["spec"]["podSelector"].get("matchLabels") or {})
        and n["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    ]
    need(
        len(own) == (1 if np_values["enabled"] else 0),
        f"{len(own)} NetworkPolicies select the pod with networkPolicy.enabled {np_values['enabled']}",
    )
    app_ports = set()
    if values.get("mode", "sidecar") == "sidecar":
        app = next(c for c in spec["containers"] if c["name"] != GUARD)
        for p in app.get("ports", []):
            app_ports |= {p["containerPort"], p.get("name")}
    for policy in own:
        need(policy["spec"]["policyTypes"] == ["Ingress"], "NetworkPolicy policyTypes")
        rules = policy["spec"].get("ingress") or []
        extra = len(np_values["extraIngress"])
        chart_rules = rules[: len(rules) - extra]
        need(rules[len(chart_rules) :] == np_values["extraIngress"], "extraIngress not appended")
        public_rules = 0
        for rule in chart_rules:
            ports = [p.get("port") for p in rule.get("ports") or []]
            need(ports, "a NetworkPolicy rule without ports admits every port, the app's too")
            for port in ports:
                need(port in ("http", 8080, "admin", 9090), f"NetworkPolicy admits port {port}")
                need(port not in app_ports, f"NetworkPolicy admits the app's port {port}")
            if any(p in ("admin", 9090) for p in ports):
                need(rule.get("from"), "the admin port is open to every peer")
                need(
                    all(p in ("admin", 9090) for p in ports),
                    "the admin rule admits more than the admin port",
                )
            else:
                public_rules += 1
                need(rule.get("from", []) == np_values["publicFrom"], "public rule peers differ")
        need(public_rules == 1, f"{public_rules} rules for the public port, expected 1")
    upstream = [n for n in policies if n["metadata"]["name"].endswith("-upstream")]
    want_upstream = bool(
        np_values["enabled"]
        and values.get("mode") == "standalone"
        and np_values["upstream"].get("podSelector")
    )
    need(len(upstream) == int(want_upstream), f"{len(upstream)} upstream NetworkPolicies")
    for policy in upstream:
        need(
            policy["spec"]["podSelector"] == np_values["upstream"].get("podSelector"),
            "the upstream NetworkPolicy selects other pods than networkPolicy.upstream.podSelector",
        )
        peers = [peer for r in policy["spec"]["ingress"] for peer in r["from"]]
        need(
            len(peers) == 1
            and set(peers[0]) == {"podSelector"}
            and peers[0]["podSelector"]["matchLabels"].items() <= labels.items(),
            "the upstream NetworkPolicy admits more than the guard's pods",
        )


def step_wiring(renders):
    problems = []
    for label, (values, objs, rendered) in renders.items():
        ident = label

        def need(cond, msg):
            if not cond:
                problems.append(f"{ident}: {msg}")

        try:
            deploy, pod = pod_of(objs)
            guard = guard_container(pod)
            try:
                text, config = config_toml(objs, pod, guard)
            except ExternalConfig as e:
                need(
                    str(e) == values.get("existingConfigMap"),
                    f"config.toml from ConfigMap {e}, which the chart does not render",
                )
                text, config = "", {}
        except (ValueError, KeyError, StopIteration, tomllib.TOMLDecodeError) as e:
            problems.append(f"{ident}: {e}")
            continue
        spec = pod["spec"]
        labels = pod["metadata"]["labels"]
        # Service -> pod: selector matches, ports http/admin target the guard's.
        cports = {p["name"]: p["containerPort"] for p in guard["ports"]}
        need(cports.get("http") == 8080 and cports.get("admin") == 9090, f"guard ports {cports}")
        # `check` warns about the memory store with more than one replica: it is told the most
        # replicas the chart can run.
        genv = {e["name"]: e.get("value") for e in guard.get("env", [])}
        most = int(values.get("replicaCount", 1))
        if values.get("autoscaling", {}).get("enabled"):
            most = max(most, int(values["autoscaling"].get("maxReplicas", 1)))
        need(
            genv.get("HTI_GUARD_REPLICAS") == str(most),
            f"HTI_GUARD_REPLICAS is {genv.get('HTI_GUARD_REPLICAS')!r}, expected {most}",
        )
        need(str(config.get("listen", "0.0.0.0:8080")).endswith(":8080"), "listen is not port 8080")
        need(
            str(config.get("admin_listen", "0.0.0.0:9090")).endswith(":9090"),
            "admin_listen is not port 9090",
        )
        # Services: the public one carries only the guard's public port, the admin one only
        # the admin port; no Service reaches the app's port.
        fullname = deploy["metadata"]["name"]
        services = kinds(objs, "Service")
        public = [s for s in services if s["metadata"]["name"] == fullname]
        admin = [s for s in services if s["metadata"]["name"] == f"{fullname}-admin"]
        need(len(public) == 1, f"no public Service {fullname}")
        need(
            len(admin) == (1 if values["adminService"]["enabled"] else 0),
            f"{len(admin)} admin Services with adminService.enabled {values['adminService']['enabled']}",
        )
        need(
            len(services) == len(public) + len(admin),
            "a Service besides the public and the admin one",
        )
        for svc in services:
            need(
                svc["spec"]["selector"].items() <= labels.items(),
                "Service selector does not match the pod",
            )
            targets = {p["name"]: p["targetPort"] for p in svc["spec"]["ports"]}
            want_targets = {"http": "http"} if svc in public else {"admin": "admin"}
            need(
                targets == want_targets,
                f"Service {svc['metadata']['name']} ports target {targets}, expected {want_targets}",
            )
        for svc in admin:
            need(
                svc["metadata"]["labels"].get("app.kubernetes.io/component") == "admin",
                "the admin Service lacks app.kubernetes.io/component: admin",
            )
        # The Ingress reaches the public Service's http port, nothing else.
        for ing in kinds(objs, "Ingress"):
            for rule in ing["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    backend = path["backend"]["service"]
                    need(
                        backend == {"name": fullname, "port": {"name": "http"}},
                        f"Ingress backend {backend}, expected the public Service's http port",
                    )
        need(
            bool(kinds(objs, "Ingress")) == bool(values["ingress"]["enabled"]),
            "Ingress rendered differs from ingress.enabled",
        )
        check_network_policies(values, objs, labels, spec, need)
        # Probes on the admin port.
        for probe, want in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
            get = guard.get(probe, {}).get("httpGet", {})
            need(
                get.get("path") == want and get.get("port") in ("admin", 9090), f"{probe} is {get}"
            )
        # Restrictive security context, pod and guard.
        sc = guard.get("securityContext", {})
        need(sc.get("runAsNonRoot") is True, "guard: runAsNonRoot is not true")
        need(sc.get("readOnlyRootFilesystem") is True, "guard: readOnlyRootFilesystem is not true")
        need(
            sc.get("allowPrivilegeEscalation") is False,
            "guard: allowPrivilegeEscalation is not false",
        )
        need(
            sc.get("capabilities", {}).get("drop") == ["ALL"], "guard: capabilities do not drop ALL"
        )
        need(
            sc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
            "guard: no RuntimeDefault seccomp",
        )
        need(
            spec.get("securityContext", {}).get("runAsNonRoot") is True,
            "pod: runAsNonRoot is not true",
        )
        need(spec.get("enableServiceLinks") is False, "enableServiceLinks is not false")
        # Drain time: the preStop sleep (endpoints and the ingress drop the pod first), then
        # SIGTERM and shutdown_grace, all within terminationGracePeriodSeconds.
        grace = duration_seconds(config.get("shutdown_grace", values["shutdownGrace"]))
        tgps = spec.get("terminationGracePeriodSeconds", 30)
        pre_stop = sleep_seconds(guard)
        need(
            pre_stop == values["guard"]["preStopSleepSeconds"],
            f"guard preStop sleep {pre_stop}s, values say {values['guard']['preStopSleepSeconds']}s",
        )
        need(
            tgps > grace + pre_stop,
            f"terminationGracePeriodSeconds {tgps} <= preStop {pre_stop}s + shutdown_grace {grace}s",
        )
        if values.get("mode", "sidecar") == "sidecar":
            app_pre = sleep_seconds(next(c for c in spec["containers"] if c["name"] != GUARD))
            if values["app"].get("preStopSleepSeconds") is None:
                need(
                    app_pre >= pre_stop + grace,
                    f"the app's preStop sleep {app_pre}s ends before the guard has drained ({pre_stop}s + {grace}s)",
                )
            need(app_pre < tgps, f"the app's preStop sleep {app_pre}s >= grace period {tgps}s")
        # Config rolls the pods: all of it, or with reload.watch (the guard reloads the rest)
        # what a reload cannot apply.
        own = values.get("rawConfig") or values.get("existingConfigMap")
        annotation = (
            "checksum/config-restart"
            if config.get("reload", {}).get("watch") and not own
            else "checksum/config"
        )
        need(
            values.get("existingConfigMap") or annotation in pod["metadata"].get("annotations", {}),
            f"no {annotation} annotation",
        )
        # Upstream per mode.
        mode = values.get("mode", "sidecar")
        if not config:
            pass  # an existing ConfigMap: not the chart's to check
        elif mode == "sidecar":
            app = [c for c in spec["containers"] if c["name"] != GUARD]
            port = app[0]["ports"][0]["containerPort"] if app and app[0].get("ports") else None
            need(len(app) == 1, f"sidecar: {len(app)} app containers")
            need(
                config["upstream"] == f"http://127.0.0.1:{port}",
                f"sidecar: upstream {config['upstream']} vs app port {port}",
            )
        else:
            need(len(spec["containers"]) == 1, "standalone: more than the guard container")
            need(
                config["upstream"] == values.get("upstream"),
                f"standalone: upstream {config['upstream']}",
            )
        # The guard container's extras, as the values give them.
        need(
            guard.get("envFrom", []) == values["guard"]["envFrom"],
            f"guard envFrom {guard.get('envFrom')}",
        )
        volume_names = {v["name"] for v in spec.get("volumes", [])}
        for m in values["guard"]["extraVolumeMounts"]:
            need(m in guard.get("volumeMounts", []), f"guard extraVolumeMount {m} missing")
            need(m["name"] in volume_names, f"guard extraVolumeMount {m['name']}: no such volume")
        # The page templates: mounted where config.toml looks for them.
        pages_dir = (config.get("pages") or {}).get("dir")
        if pages_dir:
            mount = next(
                (
                    m
                    for m in guard.get("volumeMounts", [])
                    if m["mountPath"].rstrip("/") == pages_dir
                ),
                None,
            )
            need(mount is not None, f"pages.dir {pages_dir} is on no volume mounted in the guard")
            templates = values["pages"]["templates"]
            if mount is not None and templates:
                volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
                cm = next(
                    (
                        c
                        for c in kinds(objs, "ConfigMap")
                        if c["metadata"]["name"] == volume.get("configMap", {}).get("name")
                    ),
                    None,
                )
                need(
                    cm is not None and cm["data"] == templates,
                    "the pages ConfigMap mounted at pages.dir does not hold pages.templates",
                )
        # Secrets referenced: rendered by the chart, or named by an existingSecret value.
        external = {
            (values.get("replay", {}).get("redis", {}) or {}).get("existingSecret"),
            (values.get("secrets", {}) or {}).get("existingSecret"),
            (values.get("tls", {}) or {}).get("existingSecret"),
            values["session"]["secret"].get("existingSecret"),
            values["session"]["previousSecret"].get("existingSecret"),
            *(k.get("existingSecret") for k in values["module"]["signingKeys"]),
            *(k.get("existingSecret") for k in values["module"]["decryptionKeys"]),
        } - {None, ""}
        rendered_secrets = {s["metadata"]["name"] for s in kinds(objs, "Secret")}
        refs = [
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in guard.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        ]
        for vol in spec.get("volumes", []):
            refs += [
                s["secret"]["name"]
                for s in vol.get("projected", {}).get("sources", [])
                if "secret" in s
            ]
        for ref in refs:
            need(
                ref in rendered_secrets or ref in external,
                f"Secret {ref} is neither rendered nor an existingSecret",
            )
        store = config.get("replay", {}).get("store", values["replay"]["store"])
        env_names = {e["name"] for e in guard.get("env", [])}
        redis_mode = values["replay"]["redis"]["mode"]
        want_env = (
            set()
            if store != "redis"
            else {REDIS_URL_ENV if redis_mode == "single" else REDIS_NODES_ENV}
        )
        need(
            env_names & set(REDIS_ENVS) == want_env,
            f"replay.store {store} (mode {redis_mode}) but the Redis env is {sorted(env_names & set(REDIS_ENVS))}",
        )
        for key in ("redis_url", "redis_nodes"):
            need(
                key not in config.get("replay", {}),
                f"replay.{key} is in config.toml (it may hold a password)",
            )
        # Session and module keys: files from Secrets, never values in a ConfigMap.
        session = config.get("session", {})
        need(
            "secret" not in session and "previous_secret" not in session,
            "a session secret is in config.toml (it must be a file from a Secret)",
        )
        for cm in kinds(objs, "ConfigMap"):
            need(
                "PRIVATE KEY" not in json.dumps(cm.get("data", {})),
                f"ConfigMap {cm['metadata']['name']} holds a private key",
            )
        secret_values = [
            values["session"]["secret"].get("value"),
            values["session"]["previousSecret"].get("value"),
        ]
        for cm in kinds(objs, "ConfigMap"):
            need(
                not any(v and v in json.dumps(cm.get("data", {})) for v in secret_values),
                f"ConfigMap {cm['metadata']['name']} holds a session secret",
            )
        mounts = [m["mountPath"].rstrip("/") + "/" for m in guard.get("volumeMounts", [])]
        for section, key, _, is_list in SECRET_FILE_KEYS:
            named = (config.get(section) or {}).get(key)
            for entry in (named if is_list else [named]) if named is not None else []:
                path = entry["file"] if isinstance(entry, dict) else entry
                need(
                    any(path.startswith(m) for m in mounts),
                    f"{section}.{key} {path} is on no volume mounted in the guard",
                )
        need(
            own or bool(session.get("enabled")) == bool(values["session"]["enabled"]),
            "session.enabled in config.toml differs from the values",
        )
        need(
            own or bool(config.get("shof", {}).get("enabled")) == shof_enabled(values),
            "shof.enabled in config.toml differs from the values",
        )
        # Several pods only with the shared store.
        multi = deploy["spec"].get("replicas", 1) > 1 or bool(
            kinds(objs, "HorizontalPodAutoscaler")
        )
        need(
            not multi or store == "redis" or values["replay"]["allowMemoryWithReplicas"],
            "several replicas with the memory replay store, not acknowledged",
        )
        notes_text = next((t for n, t in rendered.items() if n.endswith("NOTES.txt")), "")
        need(
            not multi or store == "redis" or "a token can be used once per" in notes_text,
            "NOTES.txt lacks the warning for the memory store with several replicas",
        )
        need(
            not multi or kinds(objs, "PodDisruptionBudget"),
            "several replicas without a PodDisruptionBudget",
        )
        for hpa in kinds(objs, "HorizontalPodAutoscaler"):
            need(
                hpa["spec"]["scaleTargetRef"]["name"] == deploy["metadata"]["name"],
                "HPA targets another Deployment",
            )
            need("replicas" not in deploy["spec"], "HPA enabled but the Deployment fixes replicas")
        for pdb in kinds(objs, "PodDisruptionBudget"):
            need(
                pdb["spec"]["selector"]["matchLabels"].items() <= labels.items(),
                "PDB selector does not match the pod",
            )
        for cm in kinds(objs, "ConfigMap"):
            if cm["metadata"].get("labels", {}).get("grafana_dashboard") == "1":
                try:
                    json.loads(cm["data"]["hti-guard.json"])
                except (KeyError, ValueError) as e:
                    problems.append(f"{ident}: dashboard ConfigMap holds no valid JSON: {e}")
        notes = next((t for n, t in rendered.items() if n.endswith("NOTES.txt")), "")
        need(
            store != "memory" or 'WARNING: replay.store is "memory"' in notes,
            "NOTES.txt lacks the memory store warning",
        )
    report(
        "wiring",
        not problems,
        f"{len(renders)} renders: public Service http only, admin Service admin only, NetworkPolicies (public port, admin port from named peers, never the app's), Ingress -> public Service, probes/ports, config mount, Secrets (none in a ConfigMap, every key file mounted), pages mount, securityContext, preStop sleeps within the grace period, upstream, envFrom/extraVolumeMounts, HPA/PDB, dashboard",
        problems,
    )


def stand_in(kind: str, config: dict, generated: dict) -> str:
    """Content for a file that lives in a Secret the chart does not render: what the guard
    would find there, made up here (the guard loads and checks key files even offline)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    def pkcs8(key) -> str:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    if kind in ("tls.cert_file", "tls.key_file"):
        generated.setdefault("tls", self_signed_pair())
        return generated["tls"][0 if kind == "tls.cert_file" else 1]
    if kind.startswith("session."):
        return base64.b64encode(os.urandom(32)).decode() + "\n"
    if kind == "module.signing_key_files":
        # A key that fits the client assertion's algorithm (RS512 unless the values say).
        alg = str((config.get("introspection") or {}).get("assertion_alg", "RS512"))
        curve = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}.get(alg)
        return pkcs8(ec.generate_private_key(curve()) if curve else rsa.generate_private_key(65537, 2048))
    # module.decryption_key_files: RSA (RSA-OAEP), never the same key as a signing key.
    return pkcs8(rsa.generate_private_key(65537, 2048))


def mounted_content(objs, pod, guard, path: str, what: str) -> tuple[str | None, str]:
    """The content of the file at `path` in the guard container, from the Secret a mounted
    volume projects there; None (and the Secret's name) when that Secret is not rendered."""
    mount = next(
        (
            m
            for m in guard.get("volumeMounts", [])
            if path.startswith(m["mountPath"].rstrip("/") + "/")
        ),
        None,
    )
    if mount is None:
        raise ValueError(f"{what} {path} is on no volume mounted in the guard")
    name = path[len(mount["mountPath"].rstrip("/")) + 1 :]
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    sources = volume.get("projected", {}).get("sources", [])
    if "secret" in volume:
        sources = [{"secret": volume["secret"]}]
    origin = None
    rendered = {sec["metadata"]["name"] for sec in kinds(objs, "Secret")}
    for src in sources:
        sec = src.get("secret")
        if not sec:
            continue
        items = sec.get("items")
        if items:
            match = [i["key"] for i in items if i["path"] == name]
            if not match:
                continue
            secret_key = match[0]
        else:
            secret_key = name
        if sec["name"] in rendered:
            value = secret_value(objs, sec["name"], secret_key)
            if value is not None:
                return value, f"Secret {sec['name']}"
            continue
        # A Secret the chart does not render (an existingSecret): it may hold the file.
        origin = origin or f"existing Secret {sec['name']}"
        if items:
            break
    if origin is None:
        raise ValueError(f"{what} {path}: no mounted Secret provides {name}")
    return None, origin


def resolve_files(objs, pod, guard, config, workdir: Path, notes: list[str]) -> dict[str, str]:
    """Secret files config.toml names (TLS pair, session keys, module keys): find the mounted
    Secret that holds each, write it under workdir (a generated stand-in when it lives in an
    existing Secret), and return env overrides pointing the guard there."""
    generated: dict = {}
    env = {}
    for section, key, variable, is_list in SECRET_FILE_KEYS:
        value = (config.get(section) or {}).get(key)
        if value is None:
            continue
        what = f"{section}.{key}"
        entries = value if is_list else [value]
        out = []
        for entry in entries:
            path = entry["file"] if isinstance(entry, dict) else entry
            content, origin = mounted_content(objs, pod, guard, path, what)
            if content is None:
                content = stand_in(what, config, generated)
                origin += " (generated stand-in)"
            target = workdir / "secrets" / Path(path).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            out.append({**entry, "file": str(target)} if isinstance(entry, dict) else str(target))
            note = f"{section} files from {origin}"
            if note not in notes:
                notes.append(note)
        if is_list:
            env[variable] = (
                "["
                + ", ".join(
                    "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in e.items()) + "}"
                    if isinstance(e, dict)
                    else json.dumps(e)
                    for e in out
                )
                + "]"
            )
        else:
            env[variable] = out[0]
    return env


def probe_check(binary: Path, snippet: str) -> tuple[int, str]:
    """`hti-guard check --offline` on a tiny config plus `snippet`: its exit code and what it
    said (a guard refuses a key it does not know with exit 2, naming it)."""
    with tempfile.TemporaryDirectory(prefix="hti-guard-probe-") as tmp:
        file = Path(tmp) / "config.toml"
        file.write_text(
            'upstream = "http://127.0.0.1:3000"\n'
            '[launch]\naudience = "Device/probe"\n'
            '[[issuers]]\niss = "https://portal.invalid"\n'
            'jwks_url = "https://portal.invalid/jwks"\n' + snippet
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("HTI_GUARD_")}
        env["RUST_LOG"] = "warn"
        proc = subprocess.run(
            [str(binary), "check", "--offline", "--config", str(file)],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    return proc.returncode, (proc.stderr + proc.stdout).strip()


def shof_support(binary: Path) -> tuple[bool, str]:
    """Whether this hti-guard knows [shof]: `check --offline` on a tiny config with an
    (off) [shof] section. A guard without it refuses the unknown key (exit 2, naming shof)."""
    returncode, out = probe_check(binary, "[shof]\nenabled = false\n")
    if returncode == 0:
        return True, "knows [shof]"
    if returncode == 2 and "shof" in out:
        line = out.splitlines()[-1]
        return False, line[: line.find("shof") + 60].rstrip() + " ..."
    raise ValueError(f"[shof] probe: check exited {returncode}: {out[-500:]}")


# Keys newer than some builds of the guard (they land on other branches at the same time as
# the chart's values for them), with a tiny config that uses each.
NEW_KEYS = {
    "replay.redis_mode": '[replay]\nredis_mode = "single"\n',
    "pages": '[pages]\nportal_url = "https://portal.invalid/"\n',
}


def new_keys_needed(values: dict) -> list[str]:
    """The NEW_KEYS a sample's config uses (ci/failover-pages-values.yaml, redis-cluster)."""
    needed = []
    if values["replay"]["store"] == "redis" and values["replay"]["redis"]["mode"] != "single":
        needed.append("replay.redis_mode")
    pages = values["pages"]
    if pages.get("portalUrl") or pages.get("dir") or pages["templates"]:
        needed.append("pages")
    return needed


def new_keys_support(binary: Path) -> dict[str, str | None]:
    """For each of NEW_KEYS: None when this hti-guard knows it, else the binary's words (it
    refuses an unknown key with exit 2, naming it)."""
    result = {}
    for key, snippet in NEW_KEYS.items():
        returncode, out = probe_check(binary, snippet)
        last = key.split(".")[-1]
        if returncode == 0:
            result[key] = None
        elif returncode == 2 and "unknown" in out and last in out:
            result[key] = out.splitlines()[-1][:90].rstrip() + " ..."
        else:
            raise ValueError(f"{key} probe: check exited {returncode}: {out[-500:]}")
    return result


def env_from(objs: list[dict], guard: dict, notes: list[str]) -> dict[str, str]:
    """The variables the guard container's envFrom gives, from the ConfigMaps and Secrets
    the chart renders; one that is not rendered (the operator's own) is noted."""
    env = {}
    for source in guard.get("envFrom", []):
        prefix = source.get("prefix", "")
        ref = source.get("configMapRef") or source.get("secretRef")
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        obj = next((o for o in kinds(objs, kind) if o["metadata"]["name"] == ref["name"]), None)
        if obj is None:
            notes.append(f"envFrom existing {kind} {ref['name']} (not the chart's, not read)")
            continue
        data = dict(obj.get("data") or {})
        if kind == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in data.items()}
            data.update(obj.get("stringData") or {})
        env.update({prefix + k: str(v) for k, v in data.items()})
    return env


def pages_env(objs, pod, guard, config, workdir: Path, notes: list[str]) -> dict[str, str]:
    """pages.dir: a copy of the templates of the ConfigMap mounted there (an empty directory
    when it is a volume of the operator's own), pointed to with HTI_GUARD_PAGES__DIR."""
    folder = (config.get("pages") or {}).get("dir")
    if not folder:
        return {}
    target = workdir / "pages"
    target.mkdir()
    mount = next(m for m in guard.get("volumeMounts", []) if m["mountPath"].rstrip("/") == folder)
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    name = volume.get("configMap", {}).get("name")
    cm = next((c for c in kinds(objs, "ConfigMap") if c["metadata"]["name"] == name), None)
    if cm is None:
        notes.append(f"pages.dir {folder} from a volume not the chart's (empty stand-in)")
    else:
        for file, content in cm["data"].items():
            (target / file).write_text(content)
        notes.append(f"{len(cm['data'])} page templates from ConfigMap {name}")
    return {PAGES_DIR_ENV: str(target)}


def step_guard(renders, binary: Path):
    problems = []
    done = []
    unset: set[str] = set()
    if not binary.is_file():
        report(
            "guard",
            False,
            f"{binary} not found",
            ["build it first (cargo build), or set HTI_GUARD_BIN"],
        )
        return
    skipped = []
    skipped_new: dict[str, list[str]] = {}
    not_chart = []
    shof_known, shof_note = None, ""
    if any(shof_enabled(values) for values, _, _ in renders.values()):
        try:
            shof_known, shof_note = shof_support(binary)
        except (ValueError, subprocess.TimeoutExpired) as e:
            problems.append(str(e))
    new_known: dict[str, str | None] = {}
    if any(new_keys_needed(values) for values, _, _ in renders.values()):
        try:
            new_known = new_keys_support(binary)
        except (ValueError, subprocess.TimeoutExpired) as e:
            problems.append(str(e))
    with tempfile.TemporaryDirectory(prefix="hti-guard-chart-") as tmp:
        for label, (values, objs, _) in renders.items():
            ident = label
            notes: list[str] = []
            if shof_enabled(values) and not shof_known:
                # Rendered, schema-checked and wired above; the guard check waits for a
                # binary with [shof] (the guard side is on its own branch until it merges).
                skipped.append(short(label))
                continue
            unknown = [k for k in new_keys_needed(values) if new_known.get(k, "?") is not None]
            if unknown:
                # Rendered, schema-checked and wired above; the guard check waits for a
                # binary with these keys (on their own branches until they merge).
                for k in unknown:
                    skipped_new.setdefault(k, []).append(short(label))
                continue
            if values.get("existingConfigMap"):
                not_chart.append(short(label))
                continue
            try:
                _, pod = pod_of(objs)
                guard = guard_container(pod)
                text, config = config_toml(objs, pod, guard)
                workdir = Path(tmp) / re.sub(r"[^A-Za-z0-9._-]+", "-", short(label))
                workdir.mkdir()
                file = workdir / "config.toml"
                file.write_text(text)
                # The pod's environment: nothing inherited that the guard would read as config.
                env = {
                    k: v
                    for k, v in os.environ.items()
                    if not k.startswith("HTI_GUARD_") and k != "RUST_LOG"
                }
                # envFrom first: the container's env entries win over it, as in a pod.
                env.update(env_from(objs, guard, notes))
                for e in guard.get("env", []):
                    if "value" in e:
                        env[e["name"]] = str(e["value"])
                        continue
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if not ref:
                        raise ValueError(
                            f"env {e['name']}: only value and secretKeyRef are resolved here"
                        )
                    value = secret_value(objs, ref["name"], ref["key"])
                    if value is None and e["name"] == REDIS_URL_ENV:
                        value = PLACEHOLDER_REDIS_URL
                        notes.append(f"Redis URL placeholder for existing Secret {ref['name']}")
                    elif value is None and e["name"] == REDIS_NODES_ENV:
                        value = PLACEHOLDER_REDIS_NODES
                        notes.append(f"Redis nodes placeholder for existing Secret {ref['name']}")
                    elif value is None:
                        raise ValueError(
                            f"env {e['name']}: Secret {ref['name']} key {ref['key']} is not rendered"
                        )
                    else:
                        notes.append(
                            f"Redis URL from Secret {ref['name']}"
                            if e["name"] == REDIS_URL_ENV
                            else f"{e['name']} from Secret {ref['name']}"
                        )
                    env[e["name"]] = value
                env["HTI_GUARD_CONFIG"] = str(file)
                env.update(resolve_files(objs, pod, guard, config, workdir, notes))
                env.update(pages_env(objs, pod, guard, config, workdir, notes))
                env["RUST_LOG"] = "warn"
                proc = subprocess.run(
                    [str(binary), "check", "--offline", "--json", "--config", str(file)],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                if proc.returncode != 0:
                    problems.append(f"{ident}: hti-guard check exited {proc.returncode}")
                    problems += [
                        f"  {line}"
                        for line in (proc.stderr + proc.stdout).strip().splitlines()[-15:]
                    ]
                    continue
                result = json.loads(proc.stdout)
                if not (result.get("usable") and result.get("offline")):
                    problems.append(
                        f"{ident}: check exited 0 but reports usable={result.get('usable')}"
                    )
                    continue
                want, sources = expected_config(values, guard)
                diffs, left = compare_report(result, want, sources)
                problems += [f"{ident}: {d}" for d in diffs]
                if not values.get("rawConfig"):
                    unset |= left
                if not diffs:
                    done.append(short(label) + (f" [{'; '.join(notes)}]" if notes else ""))
            except (
                ValueError,
                KeyError,
                StopIteration,
                tomllib.TOMLDecodeError,
                subprocess.TimeoutExpired,
            ) as e:
                problems.append(f"{ident}: {e!r}")
    groups = sorted({k.split(".")[0] + (".*" if "." in k else "") for k in unset})
    for key, labels in skipped_new.items():
        print(
            f"note guard      skipped {', '.join(labels)}: {binary.name} does not know {key} yet "
            f"({new_known.get(key)}); rendering, schema and wiring of it were checked",
            flush=True,
        )
    if not_chart:
        print(
            f"note guard      skipped {', '.join(not_chart)}: config.toml is in an existing "
            "ConfigMap, not the chart's; its mount was checked",
            flush=True,
        )
    shof_skipped = skipped
    skipped = skipped + sorted({s for ls in skipped_new.values() for s in ls}) + not_chart
    if shof_skipped:
        print(
            f"note guard      skipped {', '.join(shof_skipped)}: {binary.name} does not know [shof] yet "
            f"({shof_note}); rendering, schema and wiring of it were checked",
            flush=True,
        )
    report(
        "guard",
        not problems,
        f"{binary.name} check --offline --json accepts {len(done)}/{len(renders) - len(skipped)} rendered config.toml and reads every value as the chart meant: "
        + ", ".join(done)
        + (
            f"; keys the chart leaves at the guard's defaults: {', '.join(groups)}"
            if groups
            else ""
        ),
        problems,
    )


def tls_files_sample(yaml) -> dict:
    """One more sample, made here rather than kept in ci/ so that no private key sits in the
    repository: standalone-values.yaml with the TLS certificate and key in secrets.files (the
    Secret the chart renders) instead of tls.existingSecret."""
    values = yaml.safe_load((SAMPLES / "standalone-values.yaml").read_text())
    cert, key = self_signed_pair()
    values["tls"] = {"enabled": True, "certFile": "server.pem", "keyFile": "server-key.pem"}
    values["secrets"] = {"files": {"server.pem": cert, "server-key.pem": key}}
    return values


def koppeltaal_inline_sample(yaml) -> dict:
    """koppeltaal-session-values.yaml with every secret given as a value, so that the chart
    renders them into its own Secret (<fullname>-keys): the session keys and freshly made
    module keys (made here, so that no private key sits in the repository)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    def pem() -> str:
        return rsa.generate_private_key(65537, 2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    values = yaml.safe_load((SAMPLES / "koppeltaal-session-values.yaml").read_text())
    values["module"]["signingKeys"] = [{"pem": pem(), "kid": "module-2"}, {"pem": pem()}]
    values["module"]["decryptionKeys"] = [{"pem": pem(), "kid": "enc-1"}]
    values["session"]["secret"] = {"value": base64.b64encode(os.urandom(32)).decode()}
    values["session"]["previousSecret"] = {"value": base64.b64encode(os.urandom(48)).decode()}
    return values


def variant_samples(yaml) -> list[tuple[str, dict]]:
    """Variants of the ci/ samples for what would otherwise need a file of a few lines each."""
    minimal = lambda: yaml.safe_load((SAMPLES / "minimal-values.yaml").read_text())
    acknowledged = minimal()
    acknowledged["replicaCount"] = 2
    acknowledged["replay"] = {"allowMemoryWithReplicas": True}
    existing = minimal()
    existing["existingConfigMap"] = "my-module-guard-config"
    cluster = yaml.safe_load((SAMPLES / "failover-pages-values.yaml").read_text())
    cluster["replay"]["redis"] = {
        "mode": "cluster",
        "existingSecret": "shared-redis-cluster",
        "existingSecretNodesKey": "seed-nodes",
    }
    cluster["pages"] = {"dir": "/srv/pages"}
    cluster["extraVolumes"] = [{"name": "my-pages", "configMap": {"name": "my-module-pages"}}]
    cluster["guard"] = {
        "extraVolumeMounts": [{"name": "my-pages", "mountPath": "/srv/pages", "readOnly": True}],
        "preStopSleepSeconds": 0,
    }
    cluster["networkPolicy"] = {"enabled": False}
    cluster["adminService"] = {"enabled": False}
    return [
        ("memory-acknowledged", acknowledged),
        ("existing-configmap", existing),
        ("redis-cluster", cluster),
    ]


def cargo_version() -> str:
    return tomllib.loads((REPO / "Cargo.toml").read_text())["package"]["version"]


def step_package(helm, yaml, samples, renders):
    """The chart packaged as `helm package` would, with the crate's version, renders as the
    chart directory does."""
    import tarfile

    problems = []
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    crate = cargo_version()
    for field in ("version", "appVersion"):
        if str(meta.get(field)) != crate:
            problems.append(
                f"Chart.yaml {field} {meta.get(field)!r} differs from Cargo.toml's version {crate!r}"
            )
    archive_name = ""
    same_renders = 0
    with tempfile.TemporaryDirectory(prefix="hti-guard-package-") as tmp:
        try:
            archive = Path(helm.package(str(CHART), destination=tmp))
        except helm.HelmError as e:
            report("package", False, "helm package failed", [str(e)])
            return
        archive_name = archive.name
        if archive.name != f"hti-guard-{crate}.tgz":
            problems.append(f"packaged as {archive.name}, expected hti-guard-{crate}.tgz")
        with tarfile.open(archive) as tar:
            names = set(tar.getnames())
        for need in (
            "Chart.yaml",
            "values.yaml",
            "values.schema.json",
            "dashboards/hti-guard.json",
            *(f"templates/{p.name}" for p in (CHART / "templates").iterdir()),
        ):
            if f"hti-guard/{need}" not in names:
                problems.append(f"{archive.name} lacks hti-guard/{need}")
        stray = sorted(n for n in names if n.startswith("hti-guard/ci/"))
        if stray:
            problems.append(f"{archive.name} holds the check's samples: {stray[:3]}")
        with helm.Chart.load_archive(archive.read_bytes()) as packaged:
            for label, values in samples:
                if label not in renders:
                    continue
                try:
                    got = packaged.render(values, name=RELEASE, namespace=NAMESPACE)
                except helm.HelmError as e:
                    problems.append(f"{label}: the package does not render: {e}")
                    continue
                if got != renders[label][2]:
                    want = renders[label][2]
                    differ = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
                    problems.append(f"{label}: the package renders differently: {differ[:4]}")
                else:
                    same_renders += 1
    report(
        "package",
        not problems,
        f"Chart.yaml version and appVersion = Cargo.toml {crate}; {archive_name} ({len(names)} files, no ci/) renders {same_renders}/{len(renders)} samples exactly as the chart directory",
        problems,
    )


def main() -> int:
    start = time.monotonic()
    mods = load_deps()
    helm, kv, yaml, jsonschema = (
        mods["helm_python"],
        mods["kubernetes_validate"],
        mods["yaml"],
        mods["jsonschema"],
    )
    binary = guard_binary()
    report(
        "deps",
        True,
        f"helm-python-sdk {helm.__version__} (Helm SDK {helm.helm_sdk_version()}), kubernetes-validate {kv.version.__version__}, guard {rel(binary) if binary.is_relative_to(REPO) else binary}",
    )
    samples = [
        (rel(Path(p)), yaml.safe_load(Path(p).read_text()) or {})
        for p in sorted(glob.glob(str(SAMPLES / "*.yaml")))
    ]
    if not samples:
        report("samples", False, f"no sample values under {rel(SAMPLES)}")
        return 1
    samples.append(("tls-files", tls_files_sample(yaml)))
    samples.append(("koppeltaal-inline-keys", koppeltaal_inline_sample(yaml)))
    samples += variant_samples(yaml)
    step_lint(helm, yaml, samples)
    with helm.Chart.load(str(CHART)) as chart:
        step_schema(helm, jsonschema, yaml, chart, samples)
        renders = step_render(helm, yaml, chart, samples)
    step_package(helm, yaml, samples, renders)
    step_coverage(renders)
    step_kubernetes(kv, renders)
    step_servicemonitor(jsonschema, renders)
    step_prometheusrule(jsonschema, renders)
    step_wiring(renders)
    step_guard(renders, binary)
    print(f"chart check {'FAILED' if failures else 'passed'} in {time.monotonic() - start:.1f}s")
    print(f"chart: {passes} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
