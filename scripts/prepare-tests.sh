#!/usr/bin/env bash
# What the tests and benchmarks need beyond Python packages: Debian's Prometheus and
# Alertmanager (promtool checks the exposition and the rules; the integration tests
# run the servers), wrk (the HTTP benchmark), HAProxy and VictoriaMetrics (the
# multi-replica test), and the PostgreSQL server, which this
# machine kind starts before each session and CI run (started again if it stopped).
set -euo pipefail

apt_updated=""
apt_install() {
    if [ "$(id -u)" != "0" ]; then
        echo "warning: not root; cannot apt-get install $*" >&2
        return 0
    fi
    if [ -z "$apt_updated" ]; then
        apt-get update -qq
        apt_updated=1
    fi
    # Shown, not silenced: a first run on a new machine spends a minute here.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

need=()
command -v promtool >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
command -v wrk >/dev/null || need+=(wrk)
# The multi-replica test: a load balancer and a long-term store (remote_write target).
command -v haproxy >/dev/null || need+=(haproxy)
command -v victoria-metrics >/dev/null || need+=(victoria-metrics)
# A Redis of the tests' own, stopped and started mid-run (the machine's own stays up).
command -v redis-server >/dev/null || need+=(redis-server)
# The dashboard page's test: headless Chromium.
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing Debian's ${need[*]}"
    apt_install "${need[@]}"
fi

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if command -v pg_isready >/dev/null && ! pg_up; then
    if command -v pg_ctlcluster >/dev/null; then
        echo "starting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
        for _ in $(seq 1 30); do pg_up && break; sleep 1; done
    fi
fi
pg_up || echo "warning: PostgreSQL is not reachable on 127.0.0.1:5432; its tests will skip (fail under CI)" >&2
