# Shared by the test scripts that run a real Prometheus (source it; needs bash and curl).
#
# start_prometheus PROMETHEUS_BIN WORK_DIR TARGET_HOST:PORT LISTEN_PORT
# Writes a 1 s scrape config (job stallwatchd) into WORK_DIR, starts Prometheus on
# 127.0.0.1:LISTEN_PORT, appends its PID to the caller's `pids` array and waits until it is
# ready; exits 1 with its log when it does not become ready within 30 s.
start_prometheus() {
  local prom="$1" work="$2" target="$3" port="$4"
  cat >"$work/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: stallwatchd
    static_configs:
      - targets: ["$target"]
YML
  "$prom" --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
    --web.listen-address="127.0.0.1:$port" --log.level=warn >"$work/prometheus.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 300); do
    curl -fsS --max-time 2 "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "prometheus did not become ready"
  cat "$work/prometheus.log"
  exit 1
}
