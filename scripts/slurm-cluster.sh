#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, from Debian's packages (docs/clusters.md):
#   scripts/slurm-cluster.sh up       install (where missing) and start munged, slurmctld, slurmd; idempotent;
#                                     prints `export SLURM_CONF=...` once the node is idle
#   scripts/slurm-cluster.sh down     stop them
#   scripts/slurm-cluster.sh status   what runs, and sinfo
# Exit status 3: this machine cannot host one (no root, packages not installable); 1: it failed.
# Needs root (apt-get, the daemons). No systemd: the daemons are started by hand. Everything lives in
# $SLURM_DIR (default /var/lib/updown-slurm): slurm.conf, state, spool, logs, pid files.
set -euo pipefail

DIR=${SLURM_DIR:-/var/lib/updown-slurm}
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF
PACKAGES=(slurmctld slurmd slurm-client munge)

say() { echo "slurm-cluster: $*" >&2; }
die() { echo "error: slurm-cluster: $*" >&2; exit 1; }
unavailable() { echo "error: slurm-cluster: $*" >&2; exit 3; }  # status 3: this machine cannot host one

alive() {  # alive PIDFILE: the process it names runs (also when it is root's and we are not)
  [[ -s $1 ]] && [[ -d /proc/$(cat "$1") ]]
}

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return
  [[ $(id -u) -eq 0 ]] || unavailable "${missing[*]} not installed, and installing needs root (sudo $0 up)"
  command -v apt-get >/dev/null || unavailable "${missing[*]} not installed and no apt-get here; install SLURM by hand"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null \
    && apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || unavailable "apt-get install ${missing[*]} failed (no package source reachable?)"
}

write_conf() {
  # The node as slurmd sees it (sockets, cores, threads, memory): a node that claims more is refused.
  local node
  node=$(slurmd -C | head -1 | tr ' ' '\n' | grep -E '^(CPUs|Sockets|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' \
         | sed 's/^SocketsPerBoard=/Sockets=/' | tr '\n' ' ')
  mkdir -p "$DIR/state" "$DIR/spool"
  local tmp=$CONF.tmp.$$
  cat >"$tmp" <<CONF
# Written by scripts/slurm-cluster.sh: one node, no cgroups, no accounting (docs/clusters.md).
ClusterName=updown
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job may start again after cred_expire seconds (default 120); the scheduler looks every 2 s.
AuthInfo=cred_expire=10
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
# Finished jobs stay visible to scontrol for 10 minutes: the sweep reads their final state there.
MinJobAge=600
ReturnToService=2
KillWait=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 ${node}State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
  if cmp -s "$tmp" "$CONF"; then rm -f "$tmp"; return 1; fi  # unchanged
  mv "$tmp" "$CONF"
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 0755 /run/munge
  [[ -s /etc/munge/munge.key ]] || { mungekey --create 2>/dev/null || create-munge-key -f; chown munge:munge /etc/munge/munge.key; }
  runuser -u munge -- munged
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return; sleep 0.1; done
  die "munged did not start (see /var/log/munge/munged.log)"
}

wait_idle() {
  for _ in $(seq 150); do
    state=$(sinfo -h -N -n localhost -o %t 2>/dev/null || true)
    case $state in
      idle|mix|alloc) return ;;
      down*|drain*|inval*) scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.2
  done
  die "the node is not idle after 30 s (sinfo: ${state:-nothing}; logs in $DIR/slurmctld.log, $DIR/slurmd.log)"
}

up() {
  if [[ $(id -u) -ne 0 ]]; then  # anyone may use a running cluster; only root installs and starts one
    alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" || unavailable "no cluster running, and starting one needs root (sudo $0 up)"
    wait_idle
    echo "export SLURM_CONF=$CONF"
    return
  fi
  install_packages
  local changed=0
  write_conf && changed=1
  if [[ $changed -eq 1 ]] && { alive "$DIR/slurmctld.pid" || alive "$DIR/slurmd.pid"; }; then
    say "slurm.conf changed: restarting"
    down
  fi
  start_munge
  alive "$DIR/slurmctld.pid" || slurmctld
  alive "$DIR/slurmd.pid" || slurmd -N localhost
  wait_idle
  echo "export SLURM_CONF=$CONF"
}

stop() {  # stop PIDFILE NAME
  alive "$1" || return 0
  local pid
  pid=$(cat "$1")
  kill "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

down() {
  stop "$DIR/slurmd.pid"
  stop "$DIR/slurmctld.pid"
}

status() {
  for d in slurmctld slurmd; do
    if alive "$DIR/$d.pid"; then echo "$d: running (pid $(cat "$DIR/$d.pid"))"; else echo "$d: stopped"; fi
  done
  if alive "$DIR/slurmctld.pid"; then sinfo; fi
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
