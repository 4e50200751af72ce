#!/usr/bin/env bash
# Make sure the services the test suite talks to are up. This machine kind starts
# PostgreSQL before each session and CI run; start it again if it has stopped.
set -euo pipefail

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

if command -v pg_isready >/dev/null && ! pg_up; then
    if command -v pg_ctlcluster >/dev/null; then
        echo "starting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
        for _ in $(seq 1 30); do pg_up && break; sleep 1; done
    fi
fi
pg_up || echo "warning: PostgreSQL is not reachable on 127.0.0.1:5432; its tests will skip (fail under CI)" >&2
