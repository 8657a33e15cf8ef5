# Sourced by the benchmark scripts: waiting for a gateway they started.
#
# wait_for_gateway PORT PID LOG
#                     waits up to 60 s until http://127.0.0.1:PORT/readyz answers 200; if the
#                     process PID exits first (or time runs out), prints LOG and exits 1

wait_for_gateway() {
  local port=$1 pid=$2 log=$3
  for _ in $(seq 1 600); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "the gateway on port $port did not become ready:" >&2
  cat "$log" >&2
  exit 1
}
