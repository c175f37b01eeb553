#!/usr/bin/env bash
# Validates what operators deploy with, without a cluster: the kustomize build of
# deploy/k8s against the Kubernetes JSON schemas (strict: unknown fields fail) and KEDA's
# resources against deploy/k8s/schemas/keda.schema.json, the Prometheus alert rules with
# promtool, deploy/compose.yaml against the compose specification's schema, and the
# Grafana dashboard's queries against the metrics the code exports.
#
# Installs what is missing (kubectl and prometheus from Debian packages, the schema
# checkers from PyPI into a virtualenv in CHECK_VENV, default ~/.cache/collections-check);
# works offline once installed.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${CHECK_VENV:-$HOME/.cache/collections-check}
need=()
command -v kubectl > /dev/null || need+=(kubectl)
command -v promtool > /dev/null || need+=(prometheus)
python3 -c 'import venv' 2> /dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    # policy-rc.d or not: the prometheus package's own service is not started by us.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" > /dev/null
fi
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/check-jsonschema" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'kubernetes-validate==1.37.0' 'check-jsonschema==0.39.0'
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "k8s: kustomize build"
kubectl kustomize deploy/k8s > "$work/all.yaml"
cmp -s deploy/policy/default.toml deploy/k8s/policy/default.toml \
    || { echo "deploy/k8s/policy/default.toml differs from deploy/policy/default.toml: copy it" >&2; exit 1; }
python3 - "$work" <<'PY'
import json, os, sys, subprocess
work = sys.argv[1]
# The rendered stream, one file per resource: Kubernetes kinds and KEDA's apart.
import re
docs = [d for d in re.split(r"^---\s*$", open(os.path.join(work, "all.yaml")).read(), flags=re.M) if d.strip()]
k8s, keda = [], []
for i, d in enumerate(docs):
    target = keda if re.search(r"^apiVersion: keda\.sh/", d, flags=re.M) else k8s
    path = os.path.join(work, f"{'keda' if target is keda else 'k8s'}-{i:03}.yaml")
    open(path, "w").write(d)
    target.append(path)
open(os.path.join(work, "k8s.list"), "w").write("\n".join(k8s))
open(os.path.join(work, "keda.list"), "w").write("\n".join(keda))
kinds = {}
for d in docs:
    m = re.search(r"^kind: (\S+)", d, flags=re.M)
    kinds[m.group(1)] = kinds.get(m.group(1), 0) + 1
print("  rendered:", ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
# One Deployment, PDB and (for queue consumers) ScaledObject per binary the workers crate builds.
bins = sorted(f[:-3] for f in os.listdir("services/workers/src/bin") if f.endswith(".rs"))
workers = [b for b in bins if b.endswith("-worker")]
def named(kind):
    return {m.group(1) for d in docs if re.search(rf"^kind: {kind}$", d, flags=re.M)
            for m in [re.search(r"^  name: (\S+)$", d, flags=re.M)] if m}
for kind, want in {"Deployment": bins, "PodDisruptionBudget": bins, "ScaledObject": workers}.items():
    missing = sorted(set(want) - named(kind))
    if missing:
        sys.exit(f"no {kind} for: {', '.join(missing)}")
if kinds.get("Job", 0) != 1:
    sys.exit(f"expected 1 Job (migrations), found {kinds.get('Job', 0)}")
PY
echo "k8s: Kubernetes schemas (strict)"
# shellcheck disable=SC2046
"$venv/bin/kubernetes-validate" --strict --quiet $(cat "$work/k8s.list")
echo "k8s: KEDA resources"
# shellcheck disable=SC2046
"$venv/bin/check-jsonschema" --schemafile deploy/k8s/schemas/keda.schema.json $(cat "$work/keda.list")

echo "prometheus: promtool check rules"
promtool check rules deploy/prometheus/alerts.yaml

echo "compose: compose specification schema"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml

echo "grafana: dashboard queries name exported metrics"
python3 - <<'PY'
import json, re, subprocess, sys
dash = json.load(open("deploy/grafana/collections.json"))
exported = set(re.findall(r'"(collections_[a-z_]+)"', subprocess.run(
    ["grep", "-rhoE", '"collections_[a-z_]+"', "services/runtime/src"], capture_output=True, text=True).stdout))
bad = []
for p in dash["panels"]:
    if not p.get("targets"):
        bad.append(f"panel {p.get('title')!r} has no query")
    for t in p.get("targets", []):
        for name in re.findall(r"\b(collections_[a-z_]+)", t["expr"]):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if base not in exported:
                bad.append(f"panel {p['title']!r} queries {name}, which the service does not export")
if bad:
    sys.exit("\n".join(bad))
print(f"  {len(dash['panels'])} panels, every collections_* metric exported")
PY
echo "manifests: all valid"
