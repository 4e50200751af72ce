#!/usr/bin/env bash
# `make stack`: Parley, Prometheus and Alertmanager on this machine, from Debian's
# packages (installed when missing), with the rules and config in deploy/.
# Ctrl-C stops everything (exit 0). Ports: PARLEY_PORT (8000), PROMETHEUS_PORT (9090),
# ALERTMANAGER_PORT (9093); state lives in STACK_DIR (.stack/). DEMO_ARGS set (even
# empty): `parley demo` drives traffic too (its output in STACK_DIR/demo.log).
set -euo pipefail
cd "$(dirname "$0")/.."

PARLEY_PORT=${PARLEY_PORT:-8000}
PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090}
ALERTMANAGER_PORT=${ALERTMANAGER_PORT:-9093}
WEBHOOK_PORT=${WEBHOOK_PORT:-9095}
DASHBOARD_PORT=${DASHBOARD_PORT:-9096}
STACK_DIR=${STACK_DIR:-.stack}

need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != "0" ]; then
        echo "missing ${need[*]}: run as root, or: sudo apt-get install ${need[*]}" >&2
        exit 1
    fi
    echo "installing ${need[*]} from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The deploy/ config as it is, with targets pointing at this stack's ports.
rm -rf "$STACK_DIR/prometheus-config"
mkdir -p "$STACK_DIR/prometheus-config/targets" "$STACK_DIR/prometheus-data" "$STACK_DIR/alertmanager-data"
cp -r deploy/prometheus/prometheus.yml deploy/prometheus/rules "$STACK_DIR/prometheus-config/"
sed -i "s/127.0.0.1:9090/127.0.0.1:$PROMETHEUS_PORT/" "$STACK_DIR/prometheus-config/prometheus.yml"
printf -- '- targets: [127.0.0.1:%s]\n  labels: {env: local}\n' "$PARLEY_PORT" \
    > "$STACK_DIR/prometheus-config/targets/parley.yml"
printf -- '- targets: [127.0.0.1:%s]\n' "$ALERTMANAGER_PORT" \
    > "$STACK_DIR/prometheus-config/targets/alertmanager.yml"
# Alertmanager's page and ticket webhooks go to scripts/alert_log.py, which writes
# each notification to STACK_DIR/alerts.log.
sed "s/127.0.0.1:9095/127.0.0.1:$WEBHOOK_PORT/" deploy/alertmanager/alertmanager.yml \
    > "$STACK_DIR/prometheus-config/alertmanager.yml"

pids=()
stop() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
# Ctrl-C (or a TERM) is how the stack is meant to end: stop everything, exit 0.
trap 'stop; echo "stack stopped"; exit 0' INT TERM
trap stop EXIT

PARLEY_PORT=$PARLEY_PORT PARLEY_DATABASE_URL=${PARLEY_DATABASE_URL:-sqlite+aiosqlite:///$STACK_DIR/parley.db} \
    .venv/bin/parley serve --port "$PARLEY_PORT" > "$STACK_DIR/parley.log" 2>&1 &
pids+=($!)
prometheus --config.file="$STACK_DIR/prometheus-config/prometheus.yml" \
    --storage.tsdb.path="$STACK_DIR/prometheus-data" --enable-feature=exemplar-storage \
    --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" > "$STACK_DIR/prometheus.log" 2>&1 &
pids+=($!)
.venv/bin/python scripts/alert_log.py "$WEBHOOK_PORT" "$STACK_DIR/alerts.log" &
pids+=($!)
prometheus-alertmanager --config.file="$STACK_DIR/prometheus-config/alertmanager.yml" \
    --storage.path="$STACK_DIR/alertmanager-data" \
    --web.listen-address="127.0.0.1:$ALERTMANAGER_PORT" \
    --cluster.listen-address= > "$STACK_DIR/alertmanager.log" 2>&1 &
pids+=($!)

# The dashboard without Grafana: deploy/dashboard, its pinned uPlot from the npm registry.
dashboard="(npm is missing: no dashboard page)"
dashboard_url=
if command -v npm >/dev/null; then
    (cd deploy/dashboard && npm ci --no-audit --no-fund --silent)
    python3 -m http.server --bind 127.0.0.1 --directory deploy/dashboard "$DASHBOARD_PORT" \
        > "$STACK_DIR/dashboard.log" 2>&1 &
    pids+=($!)
    dashboard_url="http://127.0.0.1:$DASHBOARD_PORT/?prometheus=http://127.0.0.1:$PROMETHEUS_PORT"
    dashboard=$dashboard_url
fi

if [ -n "${DEMO_ARGS+set}" ]; then
    # `make stack DEMO_ARGS="--seconds 600"`: traffic for the dashboards (with --fail,
    # for the alerts too), once Parley answers.
    for _ in $(seq 1 100); do
        curl -fs "http://127.0.0.1:$PARLEY_PORT/readyz" >/dev/null 2>&1 && break
        sleep 0.2
    done
    # shellcheck disable=SC2086
    PARLEY_DEMO_DASHBOARD_URL=$dashboard_url \
        .venv/bin/parley demo --url "http://127.0.0.1:$PARLEY_PORT" $DEMO_ARGS > "$STACK_DIR/demo.log" 2>&1 &
    pids+=($!)
fi

P=http://127.0.0.1:$PROMETHEUS_PORT
A=http://127.0.0.1:$ALERTMANAGER_PORT
cat <<EOT
Parley        http://127.0.0.1:$PARLEY_PORT/docs  (API docs)
              http://127.0.0.1:$PARLEY_PORT/metrics
Prometheus    $P/classic/targets  (Parley scraped?)
              $P/classic/rules  $P/classic/alerts  (pending, then firing)
Alertmanager  $A/api/v2/alerts  (Debian's Alertmanager has no web UI: this API, or
              amtool alert query --alertmanager.url=$A; notifications: $STACK_DIR/alerts.log)
Dashboard     $dashboard  (alerts firing at the top)
Logs in $STACK_DIR/. Ctrl-C stops everything.
Failing traffic: .venv/bin/parley demo --url http://127.0.0.1:$PARLEY_PORT --fail 1
  (beside the healthy demo: TurnAvailabilityBudgetBurn pages within 5 minutes)
EOT
# The servers run until Ctrl-C; the demo (the last pid, if any) may end before.
servers=("${pids[@]:0:4}")
wait -n "${servers[@]}"
echo "a process of the stack exited; see $STACK_DIR/*.log" >&2
exit 1
