#!/usr/bin/env bash
# Real-client interop test: two Lodestar beacon nodes drive two EthereumJS execution clients
# through sync-proxy, all on 127.0.0.1 (inside a private network namespace when possible).
#
#   Lodestar BN1 (8 validators) --/bn-1-->\                     /--> EthereumJS EL-A (own JWT)
#                                          sync-proxy (BN JWT)
#   Lodestar BN2 (follows BN1)  --/bn-2-->/                     \--> EthereumJS EL-B (own JWT)
#
# The two ELs never peer with each other: EL-B only has the chain because sync-proxy delivers
# every payload and fork choice to it. After a bounded run the script checks that both ELs
# advanced to the same head hash as the beacon chain, that sync-proxy tracked both beacon nodes
# and delivered to both ELs without failures, and that Lodestar proposed blocks without
# execution errors. Exit code 0 means all of that held; otherwise it prints why and log tails.
#
# Usage: tests/interop/run.sh [--seconds N] [--split-validators] [--fault-primary] [--install-only] [--no-netns]
#   --split-validators  BN1 and BN2 get 4 of the 8 validators each, so the beacon node that is
#                       not followed proposes and attests too (the design's same-head rule)
#   --fault-primary     the primary, EL-A, is stopped for several slots and started again from
#                       its own database, behind (it answers SYNCING until sync-proxy's catch-up
#                       has replayed what it missed): no proposal may be missed meanwhile, and
#                       both ELs must be back at the beacon head by the end
# Environment:
#   INTEROP_HOME    client installs (default ~/.cache/sync-proxy-interop; reused between runs)
#   INTEROP_RUN     per-run folder with logs and data (default: a fresh mktemp folder, kept)
#   SYNC_PROXY_BIN  use this binary instead of `cargo build --release`
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
INTEROP_HOME=${INTEROP_HOME:-$HOME/.cache/sync-proxy-interop}
EJS_VERSION=0.10.5
LODESTAR_VERSION=1.5.1

RUN_SECONDS=80
SLOT_SECONDS=2      # Lodestar 1.5.1 + EthereumJS fill every 2 s slot here; 1 s slots fail.
VALIDATORS=8
MIN_BLOCKS=10       # each EL must reach at least this block number
MAX_HEAD_GAP=2      # blocks the two ELs (and the beacon head) may differ by at the end
INSTALL_ONLY=0
SPLIT=0
FAULT=0
FAULT_AT=24         # seconds after genesis EL-A is stopped (slot 12)
FAULT_FOR=12        # seconds it stays down before it is started again (6 slots)
ARGS=("$@")
USE_NETNS=1
IN_NETNS=0

# Loopback ports: fixed inside the private namespace; outside it, the next free ones.
PROXY_PORT=25590
EL_A_RPC=18545; EL_A_ENGINE=18551; EL_A_P2P=30391
EL_B_RPC=18546; EL_B_ENGINE=18552; EL_B_P2P=30392
BN1_REST=19596; BN1_P2P=19000
BN2_REST=19597; BN2_P2P=19001

while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) RUN_SECONDS=$2; shift 2 ;;
    --install-only) INSTALL_ONLY=1; shift ;;
    --split-validators) SPLIT=1; shift ;;
    --fault-primary) FAULT=1; shift ;;
    --no-netns) USE_NETNS=0; shift ;;
    --in-netns) IN_NETNS=1; shift ;;   # internal: this copy already runs inside the namespace
    *) echo "usage: $0 [--seconds N] [--split-validators] [--fault-primary] [--install-only] [--no-netns]" >&2; exit 2 ;;
  esac
done

log() { printf '[interop %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
REPORTED=0   # set once a failure has been explained, so the exit trap does not repeat it
die() { REPORTED=1; log "FAIL: $*"; exit 1; }

ejs_bin() { echo "$INTEROP_HOME/ejs/node_modules/@ethereumjs/client/dist/esm/bin/cli.js"; }
lodestar_bin() { echo "$INTEROP_HOME/lodestar/node_modules/@chainsafe/lodestar/lib/index.js"; }

# ------------------------------------------------------------------------------ install + build
install_clients() {
  local t0 missing=()
  t0=$(date +%s)
  for tool in node npm jq curl openssl ip unshare; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages for: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm jq curl openssl iproute2 util-linux >/dev/null
  fi
  mkdir -p "$INTEROP_HOME/ejs" "$INTEROP_HOME/lodestar"
  if [ ! -f "$(ejs_bin)" ]; then
    cat > "$INTEROP_HOME/ejs/package.json" <<EOF
{ "name": "interop-ejs", "version": "0.0.0", "private": true,
  "dependencies": { "@ethereumjs/client": "$EJS_VERSION" } }
EOF
    (cd "$INTEROP_HOME/ejs" && npm install --no-audit --no-fund --loglevel=error)
  fi
  if [ ! -f "$(lodestar_bin)" ]; then
    # Only 1.5.1 has a complete, consistent @lodestar/* set in the registry: pin all of them, and
    # pin the libp2p TCP stack to the multiaddr-11 generation libp2p 0.42 expects (newer
    # semver-compatible releases make the TCP transport refuse to listen).
    cat > "$INTEROP_HOME/lodestar/package.json" <<EOF
{ "name": "interop-lodestar", "version": "0.0.0", "private": true,
  "dependencies": { "@chainsafe/lodestar": "$LODESTAR_VERSION" },
  "overrides": {
    "@lodestar/api": "$LODESTAR_VERSION", "@lodestar/beacon-node": "$LODESTAR_VERSION",
    "@lodestar/config": "$LODESTAR_VERSION", "@lodestar/db": "$LODESTAR_VERSION",
    "@lodestar/fork-choice": "$LODESTAR_VERSION", "@lodestar/light-client": "$LODESTAR_VERSION",
    "@lodestar/params": "$LODESTAR_VERSION", "@lodestar/reqresp": "$LODESTAR_VERSION",
    "@lodestar/state-transition": "$LODESTAR_VERSION", "@lodestar/types": "$LODESTAR_VERSION",
    "@lodestar/utils": "$LODESTAR_VERSION", "@lodestar/validator": "$LODESTAR_VERSION",
    "@multiformats/multiaddr": "11.6.1", "@multiformats/mafmt": "11.1.2",
    "@libp2p/tcp": "6.1.2", "@libp2p/utils": "3.0.4" } }
EOF
    (cd "$INTEROP_HOME/lodestar" && npm install --no-audit --no-fund --loglevel=error)
  fi
  log "clients ready in $(( $(date +%s) - t0 ))s: node $(node --version)," \
    "ethereumjs $(node -p "require('$INTEROP_HOME/ejs/node_modules/@ethereumjs/client/package.json').version")," \
    "lodestar $(node -p "require('$INTEROP_HOME/lodestar/node_modules/@chainsafe/lodestar/package.json').version")"
}

build_proxy() {
  if [ -n "${SYNC_PROXY_BIN:-}" ]; then
    SYNC_PROXY_BIN=$(realpath "$SYNC_PROXY_BIN")
  else
    local t0 target; t0=$(date +%s)
    (cd "$ROOT" && cargo build --release --quiet)
    target=${CARGO_TARGET_DIR:-target}
    case "$target" in /*) ;; *) target="$ROOT/$target" ;; esac
    SYNC_PROXY_BIN="$target/release/sync-proxy"
    log "sync-proxy built in $(( $(date +%s) - t0 ))s"
  fi
  [ -x "$SYNC_PROXY_BIN" ] || die "no sync-proxy binary at $SYNC_PROXY_BIN"
  export SYNC_PROXY_BIN
}

if [ "$IN_NETNS" = 0 ]; then
  install_clients
  [ "$INSTALL_ONLY" = 1 ] && exit 0
  build_proxy
  # A private network namespace guarantees nothing leaves the machine (EthereumJS binds its devp2p
  # socket to 0.0.0.0 whatever the flags). `unshare -n` needs root; `-rn` adds a user namespace.
  if [ "$USE_NETNS" = 1 ]; then
    for u in "unshare -n" "unshare -rn"; do
      if $u sh -c 'ip link set lo up' 2>/dev/null; then
        log "running inside a private network namespace ($u)"
        exec $u bash -c 'ip link set lo up && exec bash "$0" --in-netns "$@"' "$0" ${ARGS[@]+"${ARGS[@]}"}
      fi
    done
    log "no network namespace available here: running on the host's loopback"
  fi
fi
[ -f "$(ejs_bin)" ] && [ -f "$(lodestar_bin)" ] || die "clients missing: run without --in-netns first"

# ------------------------------------------------------------------------------- processes
RUN=${INTEROP_RUN:-$(mktemp -d "${TMPDIR:-/tmp}/sync-proxy-interop.XXXXXX")}
mkdir -p "$RUN/logs"
PIDS=()
NAMES=()

# Stop one process: SIGINT, again (Lodestar 1.5.1 can hang in its graceful close until a second
# Ctrl+C), then SIGTERM, then SIGKILL.
stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -INT "$pid" 2>/dev/null || true
  for i in $(seq 1 12); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
  kill -INT "$pid" 2>/dev/null || true
  for i in $(seq 1 8); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() { # all at once, each by its PID: a sequential stop of slow Node shutdowns takes ~25 s
  local pid
  for pid in "${PIDS[@]}"; do stop_pid "$pid" & done
  wait
  PIDS=()
}
on_exit() {
  local rc=$?
  cleanup
  if [ "$rc" != 0 ] && [ "$REPORTED" = 0 ]; then
    log "FAIL: stopped unexpectedly (exit code $rc)"; tails; log "logs and data kept in $RUN"
  fi
}
trap on_exit EXIT
trap 'exit 130' INT TERM

started() { PIDS+=("$1"); NAMES+=("$2"); log "$2 started (pid $1)"; }
forget() { # name: a process stopped on purpose is no longer watched by all_alive
  local i
  for i in "${!NAMES[@]}"; do
    if [ "${NAMES[$i]}" = "$1" ]; then
      unset 'PIDS[i]' 'NAMES[i]'; PIDS=("${PIDS[@]}"); NAMES=("${NAMES[@]}"); return 0
    fi
  done
}
pid_of() {
  local i
  for i in "${!NAMES[@]}"; do if [ "${NAMES[$i]}" = "$1" ]; then echo "${PIDS[$i]}"; fi; done
}

tails() {
  local f
  for f in "$RUN"/logs/*.log; do
    printf '\n----- last 25 lines of %s\n' "$f" >&2
    tail -n 25 "$f" >&2 || true
  done
}
fail() { REPORTED=1; log "FAIL: $*"; tails; log "logs and data kept in $RUN"; exit 1; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

rpc() { # port method params-json
  curl -s -m 3 -X POST -H 'content-type: application/json' \
    --data "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$2\",\"params\":$3}" "http://127.0.0.1:$1"
}
el_head() {
  local hex; hex=$(rpc "$1" eth_blockNumber '[]' 2>/dev/null | jq -r '.result // empty' 2>/dev/null || true)
  echo $(( ${hex:-0} ))
}
el_hash() { rpc "$1" eth_getBlockByNumber "[\"$(printf '0x%x' "$2")\",false]" | jq -r '.result.hash // "none"' || echo none; }
bn_slot() { curl -s -m 2 "http://127.0.0.1:$1/eth/v1/beacon/headers/head" | jq -r '.data.header.message.slot // "?"' 2>/dev/null || echo "?"; }

write_genesis() { # Capella-from-genesis EL chain (geth format), shared by both ELs
  cat > "$1" <<'EOF'
{
  "config": {
    "chainId": 1337, "homesteadBlock": 0, "eip150Block": 0, "eip155Block": 0, "eip158Block": 0,
    "byzantiumBlock": 0, "constantinopleBlock": 0, "petersburgBlock": 0, "istanbulBlock": 0,
    "berlinBlock": 0, "londonBlock": 0, "mergeNetsplitBlock": 0,
    "terminalTotalDifficulty": 0, "terminalTotalDifficultyPassed": true, "shanghaiTime": 0
  },
  "nonce": "0x0", "timestamp": "0x0", "extraData": "0x", "gasLimit": "0x1c9c380", "difficulty": "0x0",
  "mixHash": "0x0000000000000000000000000000000000000000000000000000000000000000",
  "coinbase": "0x0000000000000000000000000000000000000000", "number": "0x0", "gasUsed": "0x0",
  "parentHash": "0x0000000000000000000000000000000000000000000000000000000000000000",
  "baseFeePerGas": "0x3b9aca00",
  "alloc": { "0x8943545177806ed17b9f23f0a21ee5948ecaa776": { "balance": "0x3635c9adc5dea00000" } }
}
EOF
}

start_el() { # name rpc-port engine-port p2p-port
  local name=$1 dir="$RUN/$1"
  mkdir -p "$dir"
  # A restarted EL keeps its secret: sync-proxy was given it at start.
  [ -f "$RUN/$name.hex" ] || openssl rand -hex 32 | tr -d '\n' > "$RUN/$name.hex"
  # 0.10.5 ignores `--logFile false` (it writes a file into the cwd), so give it one in its folder.
  ( cd "$dir" && exec node "$(ejs_bin)" --gethGenesis "$RUN/genesis.json" --dataDir "$dir/data" \
    --rpc --rpcAddr 127.0.0.1 --rpcPort "$2" \
    --rpcEngine --rpcEngineAddr 127.0.0.1 --rpcEnginePort "$3" --jwtSecret "$RUN/$name.hex" \
    --isSingleNode --port "$4" --extIP 127.0.0.1 --maxPeers 0 --discDns false --discV4 false \
    --logFile "$dir/file.log" --logLevelFile info --logRotate false --logLevel info ) \
    > "$RUN/logs/$name.log" 2>&1 &
  started $! "$name"
}

wait_el() { # name rpc-port -> EL_GENESIS (hash of its block 0)
  local i
  for i in $(seq 1 120); do
    EL_GENESIS=$(rpc "$2" eth_getBlockByNumber '["0x0",false]' 2>/dev/null | jq -r '.result.hash // empty' 2>/dev/null || true)
    [ -n "$EL_GENESIS" ] && return 0
    all_alive; sleep 0.5
  done
  fail "$1 did not answer eth_getBlockByNumber within 60 s"
}

start_bn() { # index engine-url extra-flags...
  local idx=$1 url=$2; shift 2
  mkdir -p "$RUN/bn$idx"
  # The polyfill adds Promise.withResolvers, which newer transitive deps of Lodestar 1.5.1 use and
  # Node 20 lacks. `lodestar dev` writes genesis.ssz into its cwd: run it from its own folder.
  ( cd "$RUN/bn$idx" && NODE_OPTIONS="--require $HERE/polyfill.cjs" LODESTAR_PRESET=minimal \
    exec node "$(lodestar_bin)" dev --dataDir "$RUN/bn$idx" \
    --genesisValidators "$VALIDATORS" --genesisTime "$GENESIS_TIME" --genesisEth1Hash "$GENESIS_HASH" \
    --params.ALTAIR_FORK_EPOCH 0 --params.BELLATRIX_FORK_EPOCH 0 --params.CAPELLA_FORK_EPOCH 0 \
    --params.TERMINAL_TOTAL_DIFFICULTY 0 --params.SECONDS_PER_SLOT "$SLOT_SECONDS" \
    --execution.urls "$url" --jwt-secret "$RUN/bn.hex" --eth1 false \
    --rest.address 127.0.0.1 --listenAddress 127.0.0.1 --logLevel info \
    --suggestedFeeRecipient 0x00000000000000000000000000000000000000ab "$@" ) \
    > "$RUN/logs/bn$idx.log" 2>&1 &
  started $! "bn$idx"
}

all_alive() {
  local i
  for i in "${!PIDS[@]}"; do
    kill -0 "${PIDS[$i]}" 2>/dev/null || fail "${NAMES[$i]} (pid ${PIDS[$i]}) exited early"
  done
}

# VmHWM: the peak resident set of a live process, in MiB.
peak_mib() { awk '/^VmHWM/ {printf "%d", $2/1024}' "/proc/$1/status" 2>/dev/null || echo 0; }

# ------------------------------------------------------------------------------------- run
T0=$(date +%s)
log "run folder $RUN; sync-proxy $SYNC_PROXY_BIN"
TAKEN=" "
pick_port() { # name: moves the port in variable `name` to the first free one not yet taken
  local p=${!1}
  while [[ "$TAKEN" == *" $p "* ]] || ! port_free "$p"; do p=$((p + 1)); done
  TAKEN="$TAKEN$p "; printf -v "$1" '%s' "$p"
}
for v in PROXY_PORT EL_A_RPC EL_A_ENGINE EL_A_P2P EL_B_RPC EL_B_ENGINE EL_B_P2P \
         BN1_REST BN1_P2P BN2_REST BN2_P2P; do
  pick_port "$v"
done
openssl rand -hex 32 | tr -d '\n' > "$RUN/bn.hex"
write_genesis "$RUN/genesis.json"

start_el el-a $EL_A_RPC $EL_A_ENGINE $EL_A_P2P
start_el el-b $EL_B_RPC $EL_B_ENGINE $EL_B_P2P
wait_el el-a $EL_A_RPC; GENESIS_HASH=$EL_GENESIS
wait_el el-b $EL_B_RPC; [ "$EL_GENESIS" = "$GENESIS_HASH" ] || fail "the two ELs disagree on the genesis block"
log "both ELs up, genesis block $GENESIS_HASH"

# Genesis is chosen here and given to both Lodestar nodes and to sync-proxy, so the proxy's slot
# arithmetic matches the beacon chain's (checked against Lodestar's REST API below). The delay
# covers Lodestar's start-up, so the first slots are not missed.
GENESIS_TIME=$(( $(date +%s) + 15 ))
"$SYNC_PROXY_BIN" --listen 127.0.0.1:$PROXY_PORT \
  --el "http://127.0.0.1:$EL_A_ENGINE#jwt-secret=$RUN/el-a.hex" \
  --el "http://127.0.0.1:$EL_B_ENGINE#jwt-secret=$RUN/el-b.hex" \
  --jwt-secret "$RUN/bn.hex" --genesis-time "$GENESIS_TIME" --seconds-per-slot "$SLOT_SECONDS" \
  --log-level "${SYNC_PROXY_LOG_LEVEL:-debug}" > "$RUN/logs/sync-proxy.log" 2>&1 &
started $! sync-proxy
for i in $(seq 1 50); do grep -q "listening on" "$RUN/logs/sync-proxy.log" && break; sleep 0.1; done
grep -q "listening on" "$RUN/logs/sync-proxy.log" || fail "sync-proxy did not start"

PROXY=http://127.0.0.1:$PROXY_PORT
BN1_VALIDATORS="0..$((VALIDATORS-1))"; BN2_FLAGS=()
if [ "$SPLIT" = 1 ]; then
  BN1_VALIDATORS="0..$((VALIDATORS/2-1))"; BN2_FLAGS=(--startValidators "$((VALIDATORS/2))..$((VALIDATORS-1))")
fi
start_bn 1 "$PROXY/bn-1" --startValidators "$BN1_VALIDATORS" --port $BN1_P2P \
  --rest.port $BN1_REST --server "http://127.0.0.1:$BN1_REST" \
  --discv5 true --enr.ip 127.0.0.1 --enr.tcp $BN1_P2P --enr.udp $BN1_P2P
ENR=""
for i in $(seq 1 120); do
  ENR=$(curl -s -m 1 "http://127.0.0.1:$BN1_REST/eth/v1/node/identity" 2>/dev/null | jq -r '.data.enr // empty' 2>/dev/null || true)
  [ -n "$ENR" ] && break; all_alive; sleep 0.5
done
[ -n "$ENR" ] || fail "BN1's REST API did not come up within 60 s"
BN_GENESIS=$(curl -s -m 2 "http://127.0.0.1:$BN1_REST/eth/v1/beacon/genesis" | jq -r '.data.genesis_time')
[ "$BN_GENESIS" = "$GENESIS_TIME" ] || fail "Lodestar genesis_time $BN_GENESIS != $GENESIS_TIME given to sync-proxy"
start_bn 2 "$PROXY/bn-2" --port $BN2_P2P --rest.port $BN2_REST --server "http://127.0.0.1:$BN2_REST" \
  --discv5 true --enr.ip 127.0.0.1 --enr.tcp $BN2_P2P --enr.udp $BN2_P2P \
  --bootnodes "$ENR" --network.connectToDiscv5Bootnodes true ${BN2_FLAGS[@]+"${BN2_FLAGS[@]}"}
log "genesis_time $GENESIS_TIME (in $(( GENESIS_TIME - $(date +%s) ))s); running ${RUN_SECONDS}s from genesis"

END=$(( GENESIS_TIME + RUN_SECONDS ))
last=""
FAULT_STATE=0    # 0 before the fault, 1 EL-A down, 2 EL-A restarted, 3 EL-A back at EL-B's head
STOPPED_AT=0; RESTARTED_AT=0; CAUGHT_UP_AT=0
while [ "$(date +%s)" -lt "$END" ]; do
  sleep 2
  if [ "$FAULT" = 1 ]; then
    t=$(( $(date +%s) - GENESIS_TIME ))
    if [ "$FAULT_STATE" = 0 ] && [ "$t" -ge "$FAULT_AT" ]; then
      log "FAULT: stopping the primary EL-A at head $(el_head $EL_A_RPC) (slot $(bn_slot $BN1_REST))"
      STOPPED_AT=$(date +%s); FAULT_STATE=1
      pid=$(pid_of el-a); forget el-a; stop_pid "$pid"   # EthereumJS may take seconds to exit
    elif [ "$FAULT_STATE" = 1 ] && [ "$(date +%s)" -ge $(( STOPPED_AT + FAULT_FOR )) ]; then
      log "FAULT: starting EL-A again after $(( $(date +%s) - STOPPED_AT ))s down (EL-B at $(el_head $EL_B_RPC))"
      start_el el-a $EL_A_RPC $EL_A_ENGINE $EL_A_P2P
      RESTARTED_AT=$(date +%s); FAULT_STATE=2
    elif [ "$FAULT_STATE" = 2 ]; then
      a=$(el_head $EL_A_RPC); b=$(el_head $EL_B_RPC)
      if [ "$a" -gt 0 ] && [ "$a" -ge "$b" ]; then
        CAUGHT_UP_AT=$(date +%s); FAULT_STATE=3
        log "FAULT: EL-A back at EL-B's head ($a) $(( CAUGHT_UP_AT - RESTARTED_AT ))s after its restart"
      fi
    fi
  fi
  all_alive
  now="EL-A=$(el_head $EL_A_RPC) EL-B=$(el_head $EL_B_RPC) BN1=$(bn_slot $BN1_REST) BN2=$(bn_slot $BN2_REST)"
  [ "$now" != "$last" ] && log "$now followed=$(curl -s -m 2 $PROXY/status | jq -r '.followed_beacon // "-"')"
  last=$now
done

# ---------------------------------------------------------------------------------- checks
# Let the last slot's calls settle, then freeze what is measured while everything still runs.
sleep 1
FREEZE_AT=$(date +%s)
curl -s -m 3 "$PROXY/status" > "$RUN/status.json" || fail "GET /status failed"
curl -s -m 3 "$PROXY/metrics" > "$RUN/metrics.txt" || fail "GET /metrics failed"
# Judge Lodestar's logs up to here: stopping it logs aborted requests that are no fault of the EL.
BN1_LINES=$(wc -l < "$RUN/logs/bn1.log"); BN2_LINES=$(wc -l < "$RUN/logs/bn2.log")
PEAKS=""
for i in "${!PIDS[@]}"; do PEAKS="$PEAKS ${NAMES[$i]}=$(peak_mib "${PIDS[$i]}")MiB"; done
TOTAL_PEAK=$(for i in "${PIDS[@]}"; do peak_mib "$i"; echo; done | awk '{s+=$1} END {print s}')
A=$(el_head $EL_A_RPC); B=$(el_head $EL_B_RPC)
BN_BLOCK=$(curl -s -m 3 "http://127.0.0.1:$BN1_REST/eth/v2/beacon/blocks/head" \
  | jq -r '.data.message.body.execution_payload.block_number // "0"')
LOW=$(( A < B ? A : B ))
HASH_A=$(el_hash $EL_A_RPC "$LOW"); HASH_B=$(el_hash $EL_B_RPC "$LOW")
cleanup   # stop everything before judging, so the logs are complete

PROBLEMS=()
problem() { PROBLEMS+=("$*"); log "problem: $*"; }

# 1. Both ELs advanced, agree on the chain (same hash at the lower head), and are at the beacon head.
[ "$A" -ge "$MIN_BLOCKS" ] && [ "$B" -ge "$MIN_BLOCKS" ] || problem "EL heads $A / $B below $MIN_BLOCKS"
GAP=$(( A > B ? A - B : B - A ))
[ "$GAP" -le "$MAX_HEAD_GAP" ] || problem "EL heads differ by $GAP blocks ($A vs $B)"
BN_GAP=$(( BN_BLOCK > A ? BN_BLOCK - A : A - BN_BLOCK ))
[ "$BN_GAP" -le "$MAX_HEAD_GAP" ] || problem "EL-A head $A is $BN_GAP blocks from the beacon head's payload $BN_BLOCK"
[ "$HASH_A" = "$HASH_B" ] && [ "$HASH_A" != none ] || problem "block $LOW differs: EL-A $HASH_A, EL-B $HASH_B"

# 2. sync-proxy tracked both beacon nodes and delivered to both ELs without failures.
S="$RUN/status.json"
for bn in bn-1 bn-2; do
  jq -e --arg id "$bn" '.beacons[] | select(.id == $id and .slot != null and .requests > 0)' "$S" >/dev/null \
    || problem "/status has no slot for $bn"
done
FOLLOWED=$(jq -r '.followed_beacon // empty' "$S")
[ -n "$FOLLOWED" ] || problem "/status shows no followed beacon"
N_UP=$(jq '[.upstreams[] | select(.health == "up")] | length' "$S")
[ "$N_UP" = 2 ] || problem "$N_UP of 2 upstreams up in /status"
# With --fault-primary, EL-A's failures while it was down are the point; EL-B must have none.
BAD=$(jq -r --arg skip "$([ "$FAULT" = 1 ] && echo ":$EL_A_ENGINE" || echo "-")" \
  '.upstreams[] | select(.failed + .timeouts + .dropped > 0) | select(.url | endswith($skip) | not)
   | "\(.url) failed=\(.failed) timeouts=\(.timeouts) dropped=\(.dropped)"' "$S")
[ -z "$BAD" ] || problem "upstream failures: $BAD"
MISMATCH=$(jq '[.upstreams[].status_mismatches] | add' "$S")
# An EL back from an outage answers SYNCING where the other says VALID until it has caught up:
# with --fault-primary the mismatches are reported, not judged.
[ "$MISMATCH" = 0 ] || [ "$FAULT" = 1 ] || problem "$MISMATCH status mismatches between the ELs"
metric() { awk -v m="$1" '$1 == m {print $2; f=1} END {if (!f) print 0}' "$RUN/metrics.txt"; }
REFUSED=$(awk '/^sync_proxy_refused_total/ {s+=$2} END {print s+0}' "$RUN/metrics.txt")
[ "$REFUSED" = 0 ] || problem "sync-proxy refused $REFUSED requests (401 = a JWT problem)"
NON_2XX=$(( $(metric 'sync_proxy_answers_total{class="4xx"}') + $(metric 'sync_proxy_answers_total{class="5xx"}') ))
[ "$NON_2XX" = 0 ] || problem "sync-proxy gave $NON_2XX 4xx/5xx answers"
# While EL-A is down or behind, sync-proxy warns about it, and about the ELs' differing verdicts
# ("<EL> says SYNCING on … where <other EL> said VALID", naming both): those lines name EL-A.
PROXY_WARN=$(grep -E ' (WARN|ERROR) ' "$RUN/logs/sync-proxy.log" | grep -cvF "127.0.0.1:$EL_A_ENGINE" || true)
[ "$PROXY_WARN" = 0 ] || problem "$PROXY_WARN warn/error lines in the sync-proxy log"
EL_A_WARN=$(grep -E ' (WARN|ERROR) ' "$RUN/logs/sync-proxy.log" | grep -cF "127.0.0.1:$EL_A_ENGINE" || true)
[ "$FAULT" = 1 ] || [ "$EL_A_WARN" = 0 ] || problem "$EL_A_WARN warn/error lines about EL-A in the sync-proxy log"

# 3. Lodestar proposed blocks and logged none of its execution-related errors (its messages for a
#    failed newPayload/forkchoiceUpdated/getPayload, a failed proposal or import). EthereumJS
#    0.10.5 no longer serves engine_exchangeTransitionConfigurationV1 (`-32601` straight from the
#    EL, with or without a proxy): Lodestar warns about it at start-up; it is counted, not failed.
bn_logs() { # both, up to the freeze, without Lodestar's colour codes
  { head -n "$BN1_LINES" "$RUN/logs/bn1.log"; head -n "$BN2_LINES" "$RUN/logs/bn2.log"; } | sed 's/\x1b\[[0-9;]*m//g'
}
PROPOSED=$(head -n "$BN1_LINES" "$RUN/logs/bn1.log" | grep -c 'Published block' || true)
PROPOSED2=$(head -n "$BN2_LINES" "$RUN/logs/bn2.log" | grep -c 'Published block' || true)
[ $(( PROPOSED + PROPOSED2 )) -ge "$MIN_BLOCKS" ] || problem "only $(( PROPOSED + PROPOSED2 )) blocks published"
[ "$SPLIT" = 0 ] || [ "$PROPOSED2" -gt 0 ] || problem "BN2 (not followed) published no block"
# Every validator is on BN1 or BN2, so every slot has a proposer: a slot in the watched window
# without a published block is a missed proposal. The window starts two slots before the fault
# (or at slot 8, once both nodes are synced) and ends one slot before the freeze.
published_slots() {
  { head -n "$BN1_LINES" "$RUN/logs/bn1.log"; head -n "$BN2_LINES" "$RUN/logs/bn2.log"; } \
    | sed 's/\x1b\[[0-9;]*m//g' | grep -oE 'Published block slot=[0-9]+' | grep -oE '[0-9]+$' | sort -nu
}
FIRST_WATCHED=$(( FAULT == 1 ? FAULT_AT / SLOT_SECONDS - 2 : 8 ))
LAST_WATCHED=$(( (FREEZE_AT - GENESIS_TIME) / SLOT_SECONDS - 1 ))
MISSED=$(comm -23 <(seq "$FIRST_WATCHED" "$LAST_WATCHED" | sort) <(published_slots | sort) | sort -n | tr '\n' ' ')
[ -z "$MISSED" ] || problem "missed proposals in slots $MISSED(watched $FIRST_WATCHED..$LAST_WATCHED)"
if [ "$FAULT" = 1 ]; then
  [ "$FAULT_STATE" = 3 ] || problem "EL-A never got back to EL-B's head after its restart"
  [ "$N_UP" = 2 ] || problem "EL-A is not up again in /status after its restart"
fi
# A head imported "optimistically" (Lodestar's "execution: syncing") means the EL's verdict on
# the block did not reach that beacon node; its validators may not attest on such a head.
optimistic() { head -n "$2" "$RUN/logs/$1.log" | grep -cE 'Synced - slot: [0-9]+ .*execution: syncing' || true; }
OPTIMISTIC1=$(optimistic bn1 "$BN1_LINES"); OPTIMISTIC2=$(optimistic bn2 "$BN2_LINES")
EL_ERROR_RE='error: (Error pushing notifyForkchoiceUpdate|Failed to produce (execution|builder) block|Error proposing block|Block error|Non BlockError|Failed to run prepareForNextSlot|Error on block duties|Error on runEvery fn|Error on runSyncCommitteeTasks|Error on SyncCommitteeContribution)'
EL_ERRORS=$(bn_logs | grep -cE "$EL_ERROR_RE" || true)
if [ "$EL_ERRORS" != 0 ]; then
  problem "$EL_ERRORS execution-related errors in the Lodestar logs"
  bn_logs | grep -E "$EL_ERROR_RE" | cut -c1-240 | head -n 12 >&2
fi
TRANSITION_WARN=$(bn_logs | grep -c 'Could not validate transition configuration' || true)

log "SUMMARY: ran $(( $(date +%s) - T0 ))s (slots of ${SLOT_SECONDS}s); EL heads A=$A B=$B, beacon head payload $BN_BLOCK;" \
  "blocks published BN1 $PROPOSED BN2 $PROPOSED2; optimistic heads BN1 $OPTIMISTIC1 BN2 $OPTIMISTIC2;" \
  "Lodestar execution errors $EL_ERRORS; followed $FOLLOWED;" \
  "upstreams up $N_UP/2, mismatches $MISMATCH, sync-proxy warn/error lines $PROXY_WARN;" \
  "exchangeTransitionConfigurationV1 warnings (EL lacks it) $TRANSITION_WARN;" \
  "slots watched for missed proposals $FIRST_WATCHED..$LAST_WATCHED, missed: ${MISSED:-none}"
grep -E '^sync_proxy_(requests_total|local_answers_total|ignored_slot_claims_total|beacon_switches_total|answers_total)' "$RUN/metrics.txt" | grep -v ' 0$' | tr '\n' ' ' >&2; echo >&2
jq -c '.beacons[] | {id, slot, requests, followed}' "$S" >&2
jq -c '.upstreams[] | {url, health, sent, answered, failed, timeouts, dropped, retried, status_mismatches}' "$S" >&2
log "peak RSS:$PEAKS (sum $TOTAL_PEAK MiB)"
if [ "$FAULT" = 1 ]; then
  log "fault: EL-A down $(( RESTARTED_AT - STOPPED_AT ))s, back at EL-B's head" \
    "$([ "$CAUGHT_UP_AT" -gt 0 ] && echo "$(( CAUGHT_UP_AT - RESTARTED_AT ))s after its restart" || echo never);" \
    "sync-proxy warn/error lines about EL-A $EL_A_WARN"
fi
if [ ${#PROBLEMS[@]} -gt 0 ]; then
  fail "${#PROBLEMS[@]} check(s) failed: ${PROBLEMS[*]}"
fi
log "PASS (logs in $RUN)"
