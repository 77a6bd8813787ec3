#!/usr/bin/env bash
# A multi-host test bed on one machine: Linux network namespaces play the hosts.
#
#   cluster/testbed.sh up N [RATE DELAY] [SLOTS]
#                                          hosts ldh1..ldhN on 10.213.77.0/24, joined by a bridge
#                                          in namespace ldsw; optional tc shaping per link
#                                          (for example "1gbit 100us")
#   cluster/testbed.sh down                removes every namespace and link it made
#   cluster/testbed.sh run HOST CMD...     runs CMD as HOST (its network, hostname and /etc/hosts)
#   cluster/testbed.sh mpirun ARGS...      mpirun from ldh1 across the hosts of the hostfile
#                                          cluster/.testbed/hosts (slots per host given to `up`)
#   cluster/testbed.sh txbytes HOST        bytes HOST has sent on its link
#
# Traffic stays between the namespaces: the subnet is private and not routed anywhere.
# TESTBED_PREFIX, TESTBED_SUBNET and TESTBED_SWITCH (default ldh, 10.213.77, ldsw) name a
# second test bed that can be up beside the first (cluster/slurm-testbed.sh uses lds, 10.213.78).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
prefix="${TESTBED_PREFIX:-ldh}"
subnet="${TESTBED_SUBNET:-10.213.77}"
switch="${TESTBED_SWITCH:-ldsw}"
state="$here/.testbed"; [[ $prefix == ldh ]] || state="$here/.testbed-$prefix"

cmd="${1:-}"; shift || true
case "$cmd" in
up)
  n="${1:?usage: testbed.sh up N [RATE DELAY] [SLOTS]}"; rate="${2:-}"; delay="${3:-}"; slots="${4:-2}"
  "$0" down >/dev/null 2>&1 || true
  mkdir -p "$state"
  ip netns add "$switch"
  ip netns exec "$switch" ip link add br0 type bridge
  ip netns exec "$switch" ip link set br0 up
  ip netns exec "$switch" ip link set lo up
  : > "$state/hosts"
  hostsfile="127.0.0.1 localhost"$'\n'
  for i in $(seq 1 "$n"); do hostsfile+="$subnet.$((10 + i)) $prefix$i"$'\n'; done
  for i in $(seq 1 "$n"); do
    h="$prefix$i"
    ip netns add "$h"
    ip link add "$h-eth0" type veth peer name "sw-$h"
    ip link set "$h-eth0" netns "$h"
    ip link set "sw-$h" netns "$switch"
    ip netns exec "$switch" ip link set "sw-$h" master br0
    ip netns exec "$switch" ip link set "sw-$h" up
    ip netns exec "$h" ip link set lo up
    ip netns exec "$h" ip link set "$h-eth0" name eth0
    ip netns exec "$h" ip addr add "$subnet.$((10 + i))/24" dev eth0
    ip netns exec "$h" ip link set eth0 up
    if [[ -n "$rate" ]]; then
      # netem shapes rate and delay; kernels without sch_netem still have tbf (rate only).
      if ! ip netns exec "$h" tc qdisc add dev eth0 root netem rate "$rate" delay "${delay:-0us}" 2>/dev/null; then
        ip netns exec "$h" tc qdisc add dev eth0 root tbf rate "$rate" burst 64kb latency 50ms
        [[ -z "$delay" ]] || echo "testbed: no netem in this kernel: links shaped to $rate, delay $delay not applied" >&2
      fi
    fi
    mkdir -p "/etc/netns/$h"
    printf '%s' "$hostsfile" > "/etc/netns/$h/hosts"
    echo "$h slots=$slots" >> "$state/hosts"
  done
  echo "testbed up: $n hosts (${prefix}1..$prefix$n) on $subnet.0/24${rate:+, links $rate $delay}" >&2
  ;;
down)
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^($prefix[0-9]+|$switch)$" || true); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns"
    rm -rf "/etc/netns/$ns"
  done
  rm -rf "$state"
  ;;
run)
  h="${1:?usage: testbed.sh run HOST CMD...}"; shift
  # A UTS namespace of its own gives the host its own hostname (OpenMPI tells nodes apart by it).
  exec ip netns exec "$h" unshare --uts sh -c 'hostname "$0"; exec "$@"' "$h" "$@"
  ;;
mpirun)
  test -f "$state/hosts" || { echo "testbed is not up: cluster/testbed.sh up N" >&2; exit 1; }
  exec "$0" run "${prefix}1" mpirun --allow-run-as-root --hostfile "$state/hosts" \
    --mca plm_rsh_agent "$here/testbed-rsh" --bind-to none --mca mpi_yield_when_idle 1 \
    --mca btl_tcp_if_include "$subnet.0/24" --mca oob_tcp_if_include "$subnet.0/24" "$@"
  ;;
txbytes)
  ip netns exec "${1:?host}" cat /sys/class/net/eth0/statistics/tx_bytes
  ;;
*)
  sed -n '2,17p' "$0" >&2; exit 2 ;;
esac
