#!/usr/bin/env bash
# Install the system programs leadflow's local services need, when missing:
#   java (17+) and mvn   - to fetch and run Apache Kafka from Maven Central
#   PostgreSQL server    - initdb/pg_ctl for the project-owned cluster
#   python3 -m venv      - for `make`'s virtual environment
# Uses Debian's packages through apt-get; needs root for that. Without root it
# only reports what is missing.
set -euo pipefail

missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn  >/dev/null 2>&1 || missing+=(maven)
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && ! command -v pg_ctl >/dev/null 2>&1; then
    missing+=(postgresql)
fi
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
command -v runuser >/dev/null 2>&1 || missing+=(util-linux)

if [ ${#missing[@]} -eq 0 ]; then
    echo "system deps: all present (java, mvn, postgres, python venv)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "system deps missing: ${missing[*]} - install them (Debian: apt-get install ${missing[*]})" >&2
    exit 1
fi
echo "system deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Keep the package from starting Debian's own cluster on port 5432: leadflow
# runs its own. policy-rc.d exit 101 = "action forbidden".
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
