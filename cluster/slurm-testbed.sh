#!/usr/bin/env bash
# A real Slurm cluster (Debian 12's Slurm 22.05) on the network-namespace test bed.
#
#   cluster/slurm-testbed.sh up [N [CPUS]] N nodes lds1..ldsN (2-4, default 2) on 10.213.78.0/24,
#                                          the machine's cores split among them (or CPUS each);
#                                          munged and slurmctld on this machine (10.213.78.1),
#                                          one slurmd per node; installs the Debian packages
#                                          when missing
#   cluster/slurm-testbed.sh down          stops every daemon and job, removes the namespaces,
#                                          /etc/slurm/slurm.conf and the state
#   cluster/slurm-testbed.sh status        sinfo and squeue
#   cluster/slurm-testbed.sh fail HOST     a lost node: kills everything on HOST (slurmd, step
#                                          daemons, ranks) and cuts its link
#   cluster/slurm-testbed.sh restore HOST  HOST back as after a reboot: link up, slurmd started
#                                          (it returns to service)
#
# While it is up, sinfo, sbatch, squeue, scancel, scontrol and `sacct -c` (job completion
# records: jobcomp/filetxt; there is no slurmdbd) work from this shell as on a login node.
# Jobs run as root, no CPU binding (task/none): every node sees the whole machine, the
# scheduler gives each node its share of the cores (CPUs=cores/N).
# SLURM_TESTBED_STATE (default /run/lora-dist-slurm) holds the daemons' state and logs;
# with SLURM_TESTBED_OWNER=PID, `up` leaves a watcher that runs `down` once PID has ended.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export TESTBED_PREFIX=lds TESTBED_SUBNET=10.213.78 TESTBED_SWITCH=ldssw
subnet=$TESTBED_SUBNET
state="${SLURM_TESTBED_STATE:-/run/lora-dist-slurm}"
conf=/etc/slurm/slurm.conf
marker="# written by lora-dist cluster/slurm-testbed.sh"
ctl_if=ldsctl0   # this machine's link to the test bed's bridge

# libpmix-dev: the mpi_pmix plugin dlopens pmix2/lib/libpmix.so, the -dev package's symlink.
packages=(munge slurmctld slurmd slurm-client slurm-wlm-basic-plugins libpmix-dev)

install_packages() {
  local missing=() p
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  echo "slurm-testbed: installing ${missing[*]}" >&2
  apt-get update -qq
  # The test bed runs daemons of its own: a munged the package may start is left alone (it
  # listens on another socket), and Debian's slurmd/slurmctld units need a slurm.conf.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Waits up to $1 seconds for command $2... to succeed.
wait_for() {
  local t=$1; shift
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || return 1
    sleep 0.2
  done
}

# Starts a daemon with none of this script's open files but stdin/stdout/stderr, and those
# on /dev/null and the log: a caller waiting for this script must not wait for the daemons
# too (a pipe it reads to the end; Foundation's Process, which watches a socket its child
# inherits, never sees the script end while a daemon holds that socket).
detached() {
  ( for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}; ((fd > 2)) && { eval "exec $fd>&-" 2>/dev/null || true; }
    done
    exec "$@" </dev/null >>"$state/log/daemons.out" 2>&1 )
}

node_idle() { [[ "$(sinfo -h -n "$1" -o %T 2>/dev/null)" == idle* ]]; }

# A node is the network namespace of testbed.sh, a UTS namespace for its hostname and a
# mount namespace with the test bed's /etc/hosts. Not `ip netns exec`: it mounts a fresh
# /sys without /sys/fs/cgroup, and slurmd 22.05 does not start without its cgroup plugin,
# even with proctrack/linuxproc and task/none. The nodes share this machine's file systems,
# /tmp included; each has its own TmpFS (Slurm's PMIx plugin makes each step's client
# directory there, at the same path on every node).
start_slurmd() {
  local h=$1
  mkdir -p "$state/spool/$h" "$state/tmp/$h"
  chmod 1777 "$state/tmp/$h"
  detached nsenter --net="/run/netns/$h" unshare --uts --mount --propagation private sh -c '
    hostname "$0"; mount --bind "/etc/netns/$0/hosts" /etc/hosts; exec slurmd -N "$0"' "$h" || {
    echo "slurm-testbed: slurmd on $h failed:" >&2; tail -n 20 "$state/log/slurmd-$h.log" >&2; return 1; }
}

kill_pidfile() {
  local f=$1 pid
  [[ -f $f ]] || return 0
  pid=$(cat "$f" 2>/dev/null || true)
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 25); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

cmd="${1:-}"; shift || true
case "$cmd" in
up)
  n="${1:-2}"
  [[ $n =~ ^[2-4]$ ]] || { echo "usage: slurm-testbed.sh up [N [CPUS]], N from 2 to 4" >&2; exit 2; }
  [[ $(id -u) -eq 0 ]] || { echo "slurm-testbed: needs root (network namespaces, slurmd)" >&2; exit 1; }
  if [[ -e $conf ]] && ! grep -qF "$marker" "$conf"; then
    echo "slurm-testbed: $conf exists and is not the test bed's: refusing to replace it" >&2; exit 1
  fi
  install_packages
  "$0" down >/dev/null 2>&1 || true
  # On any failure from here: show why, and leave nothing behind.
  set -o errtrace
  trap 'echo "slurm-testbed: up failed; logs were:" >&2; tail -n 5 "$state"/log/* >&2 2>/dev/null; "$0" down >/dev/null 2>&1' ERR

  cores=$(nproc)
  cpus=${2:-$((cores / n))}; ((cpus >= 1)) || cpus=1
  "$here/testbed.sh" up "$n" "" "" "$cpus" >/dev/null
  # This machine joins the bridge as 10.213.78.1: slurmctld listens there, and the client
  # commands of this shell reach it; the nodes reach it by the name ldsctl.
  ip link add "$ctl_if" type veth peer name sw-ctl
  ip link set sw-ctl netns "$TESTBED_SWITCH"
  ip netns exec "$TESTBED_SWITCH" ip link set sw-ctl master br0
  ip netns exec "$TESTBED_SWITCH" ip link set sw-ctl up
  ip addr add "$subnet.1/24" dev "$ctl_if"
  ip link set "$ctl_if" up
  nodes=()
  for i in $(seq 1 "$n"); do
    nodes+=("lds$i")
    echo "$subnet.1 ldsctl" >> "/etc/netns/lds$i/hosts"
  done

  mkdir -p "$state"/{munge,ctld,spool,log}
  chmod 755 "$state/munge"
  # munge: a key and a daemon of the test bed's own (a system munged, if any, is left alone).
  mungekey --create --keyfile="$state/munge/munge.key" 2>/dev/null || \
    dd if=/dev/urandom of="$state/munge/munge.key" bs=1024 count=1 status=none
  chmod 600 "$state/munge/munge.key"
  detached munged --force --socket="$state/munge/munge.socket" --key-file="$state/munge/munge.key" \
    --pid-file="$state/munge/munged.pid" --log-file="$state/log/munged.log" --seed-file="$state/munge/seed"

  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / n / 2 ))
  mkdir -p /etc/slurm
  cat > "$conf" <<EOF
$marker (up $n): removed by \`down\`
ClusterName=loradist
MailProg=/bin/true
SlurmctldHost=ldsctl($subnet.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: also how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$state/munge/munge.socket,cred_expire=10
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool/%n
TmpFS=$state/tmp/%n
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/spool/%n/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
# Scheduling passes every second (defaults: 60 s main, 30 s backfill): a requeued job starts
# as soon as it is eligible.
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
# A node that stops answering is down (and its jobs ended) within 15-20 s.
SlurmdTimeout=10
MessageTimeout=5
KillWait=5
UnkillableStepTimeout=20
MinJobAge=600
JobRequeue=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$state/jobcomp.txt
EOF
  for i in $(seq 1 "$n"); do
    echo "NodeName=lds$i NodeAddr=$subnet.$((10 + i)) CPUs=$cpus RealMemory=$mem State=UNKNOWN" >> "$conf"
  done
  echo "PartitionName=testbed Nodes=lds[1-$n] Default=YES MaxTime=INFINITE State=UP" >> "$conf"

  detached unshare --uts sh -c 'hostname ldsctl; exec slurmctld'
  wait_for 30 scontrol ping || { echo "slurm-testbed: slurmctld does not answer" >&2; false; }
  for h in "${nodes[@]}"; do start_slurmd "$h"; done
  for h in "${nodes[@]}"; do
    wait_for 30 node_idle "$h" || { echo "slurm-testbed: $h did not register" >&2; false; }
  done
  trap - ERR
  # SLURM_TESTBED_OWNER=PID: the test bed goes down when that process ends, however it ends.
  if [[ -n ${SLURM_TESTBED_OWNER:-} ]]; then
    detached setsid --fork bash -c 'echo $$ > "$3/owner-watch.pid"
      while kill -0 "$1" 2>/dev/null && [[ -f "$3/owner-watch.pid" ]]; do sleep 1; done
      [[ -f "$3/owner-watch.pid" ]] && rm -f "$3/owner-watch.pid" && exec "$2" down' \
      owner-watch "$SLURM_TESTBED_OWNER" "$here/slurm-testbed.sh" "$state"
  fi
  echo "slurm-testbed up: partition testbed, ${n} nodes (lds1..lds$n, $cpus CPU(s) each) on $subnet.0/24" >&2
  ;;
down)
  kill_pidfile "$state/owner-watch.pid"
  # Jobs first (their processes live in the namespaces, which go next), then the daemons.
  kill_pidfile "$state/slurmctld.pid"
  "$here/testbed.sh" down
  ip link del "$ctl_if" 2>/dev/null || true
  kill_pidfile "$state/munge/munged.pid"
  if [[ -f $conf ]] && grep -qF "$marker" "$conf"; then rm -f "$conf"; fi
  rm -rf "$state"
  ;;
status)
  sinfo; squeue
  ;;
fail)
  h="${1:?usage: slurm-testbed.sh fail HOST}"
  # What a power cut looks like from the rest of the cluster: the link goes quiet, then
  # the node's processes are gone.
  ip netns exec "$h" ip link set eth0 down
  ip netns pids "$h" | xargs -r kill -9
  ;;
restore)
  h="${1:?usage: slurm-testbed.sh restore HOST}"
  # As after a reboot: its TmpFS is empty, and so is what the killed step daemons left in the
  # spool. Slurm 22.05's PMIx plugin does not clear a killed step's pmix.<job>.<step>
  # directory and stepd.slurm.pmix.<job>.<step> socket: the requeued job (same job id,
  # step 0) landing on the node fails to launch ("Cannot create server lib tmpdir ... File
  # exists", then "Cannot bind() UNIX socket ... Address already in use"). On a real
  # cluster whose spool survives a reboot, the node's boot (or slurmd's ExecStartPre)
  # should remove them.
  rm -rf "${state:?}/tmp/$h" "$state/spool/$h"/pmix.* "$state/spool/$h"/stepd.slurm.pmix.*
  ip netns exec "$h" ip link set eth0 up
  start_slurmd "$h"
  wait_for 30 node_idle "$h" || { echo "slurm-testbed: $h did not return to service" >&2; exit 1; }
  ;;
*)
  sed -n '2,24p' "$0" >&2; exit 2 ;;
esac
