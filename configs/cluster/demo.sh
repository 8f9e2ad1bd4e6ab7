#!/usr/bin/env bash
# make cluster-demo: on 127.0.0.1, the Asterisk simulator (:29088), a NATS node (n3) and two
# daemons a (:29080) and b (:29081) whose embedded NATS servers are the cluster's other two
# nodes. Runs until CLUSTER_DEMO_SECONDS pass (default 300) or Ctrl-C, then stops them all.
# Logs and pids are in data/cluster-demo/.
set -euo pipefail
BIN=${BIN:-bin/invokeari}
DIR=data/cluster-demo
SECS=${CLUSTER_DEMO_SECONDS:-300}
rm -rf "$DIR"
mkdir -p "$DIR"
pids=()
cleanup() {
	trap - EXIT INT TERM
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	echo "cluster demo stopped"
}
trap cleanup EXIT INT TERM
export INVOKEARI_DEMO_ARI_PASSWORD=demo-secret
start() {
	local name=$1
	shift
	"$BIN" "$@" >"$DIR/$name.log" 2>&1 &
	echo $! >"$DIR/$name.pid"
	pids+=($!)
}
start sim sim -listen 127.0.0.1:29088
start n3 nats-node -name n3 -listen 127.0.0.1:29424 -store-dir "$DIR/n3" -cluster invokeari-demo \
	-cluster-listen 127.0.0.1:29624 \
	-routes nats-route://127.0.0.1:29622,nats-route://127.0.0.1:29623,nats-route://127.0.0.1:29624
start a serve -config configs/cluster/a.yaml
start b serve -config configs/cluster/b.yaml
for port in 29080 29081; do
	for _ in $(seq 1 600); do # up to 60 s: the cluster elects its JetStream leader first
		if curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; then break; fi
		sleep 0.1
	done
done
echo "cluster demo ready: daemon a http://127.0.0.1:29080 (pid $(cat $DIR/a.pid)), daemon b http://127.0.0.1:29081, NATS nats://127.0.0.1:29422,nats://127.0.0.1:29423,nats://127.0.0.1:29424; stops in ${SECS}s or on Ctrl-C"
sleep "$SECS" &
wait $!
