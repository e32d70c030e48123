#!/usr/bin/env bash
# A real, single-node Slurm cluster on localhost, for the cluster tests.
#
#   tests/cluster/slurm.sh install   apt-get install Debian's slurm + munge (skipped when present)
#   tests/cluster/slurm.sh start     install, write slurm.conf, start munged/slurmctld/slurmd,
#                                    wait until the node is idle (idempotent)
#   tests/cluster/slurm.sh stop      cancel our jobs, stop the three daemons by their pid files
#   tests/cluster/slurm.sh status    exit 0 when the node answers and is usable
#   tests/cluster/slurm.sh env       print `export SLURM_CONF=...` (eval "$(... env)")
#
# No systemd, no cgroups, no accounting: ProctrackType=proctrack/linuxproc,
# TaskPlugin=task/none, AccountingStorageType=accounting_storage/none. One node,
# `localhost` (slurmd -N localhost, so the machine's hostname never matters), with the
# machine's CPUs, 90 % of its memory and one pretend GPU (gres gpu:1 on /dev/null, so
# that `--gpus=1` jobs can be scheduled); one partition, `debug`. Every file the cluster
# writes lives in one state directory, $SPIKESCALE_SLURM_DIR (default
# /tmp/spikescale-slurm): slurm.conf, gres.conf, logs, pid files, spool, munge socket.
#
# The Snakemake jobstep plugin strips SLURM_CONF from the environment of the `srun` it
# runs inside each job, so srun must find the configuration at Slurm's default path:
# start links /etc/slurm/slurm.conf to the state directory's file (refusing to replace a
# foreign /etc/slurm/slurm.conf) and stop removes that link again. Nothing else outside
# the state directory is changed apart from what the Debian packages install.
#
# Needs root (apt-get, munged runs as the munge user, slurmd as root).
# Environment: SPIKESCALE_SLURM_DIR, SPIKESCALE_SLURM_PORT (slurmctld port, slurmd uses
# port+1; default 6817), SPIKESCALE_SLURM_TIMEOUT (seconds to wait for an idle node, 60).
set -euo pipefail

STATE="${SPIKESCALE_SLURM_DIR:-/tmp/spikescale-slurm}"
PORT="${SPIKESCALE_SLURM_PORT:-6817}"
TIMEOUT="${SPIKESCALE_SLURM_TIMEOUT:-60}"
CONF="$STATE/slurm.conf"
ETC_CONF=/etc/slurm/slurm.conf
MUNGE_DIR="$STATE/munge"
MUNGE_SOCKET="$MUNGE_DIR/munge.socket.2"
MUNGED_PID="$MUNGE_DIR/munged.pid"   # written by munged itself, which runs as user munge
PARTITION=debug
# The Slurm plugin falls back from squeue to sacct when MinJobAge < 3 x its
# init-seconds-before-status-checks (default 40 s), and sacct cannot work without
# accounting. 600 s leaves room for any init value up to 200 s.
MIN_JOB_AGE=600
PACKAGES=(slurmctld slurmd slurm-client munge)

export SLURM_CONF="$CONF"
export PATH="$PATH:/usr/sbin:/sbin"

log() { echo "slurm.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

need_root() {
    [[ "$(id -u)" == 0 ]] || die "must run as root (apt-get, munged as user munge, slurmd as root)"
}

installed() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
        command -v sbatch >/dev/null && command -v munged >/dev/null
}

cmd_install() {
    if installed; then
        return 0
    fi
    need_root
    log "installing ${PACKAGES[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
    installed || die "packages installed but the daemons are still not on PATH"
}

# the pid in a pid file, only if that process is alive and is the daemon named
# (a stale pid file must never make us signal an unrelated process)
live_pid() {
    local file="$1" name="$2" pid
    [[ -s "$file" ]] || return 1
    pid="$(<"$file")"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]] || return 1
    echo "$pid"
}

munge_key() {
    # Debian's munge package creates /etc/munge/munge.key; make our own otherwise.
    if [[ -r /etc/munge/munge.key ]]; then
        echo /etc/munge/munge.key
        return
    fi
    local key="$MUNGE_DIR/munge.key"
    if [[ ! -s "$key" ]]; then
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$key" >/dev/null
        else
            dd if=/dev/urandom bs=1 count=1024 of="$key" status=none
        fi
    fi
    chown munge:munge "$key"
    chmod 0600 "$key"
    echo "$key"
}

write_conf() {
    # Hardware as slurmd sees it (a node that claims more than it has is drained),
    # named localhost so the machine's hostname never matters.
    local hw cpus mem
    hw="$(slurmd -C | head -n 1)"
    cpus="$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")"
    mem="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")"
    [[ -n "$cpus" && -n "$mem" ]] || die "cannot read CPUs/RealMemory from 'slurmd -C': $hw"
    # keep a little memory back for the daemons and the test itself
    mem=$((mem * 9 / 10))
    cat >"$CONF" <<EOF
# written by tests/cluster/slurm.sh; a one-node test cluster
ClusterName=spikescale
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=$MIN_JOB_AGE
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

link_etc_conf() {
    if [[ -e "$ETC_CONF" || -L "$ETC_CONF" ]]; then
        if [[ "$(readlink "$ETC_CONF" || true)" != "$CONF" ]]; then
            die "$ETC_CONF exists and is not this test cluster's; refusing to replace it"
        fi
        return 0
    fi
    mkdir -p "$(dirname "$ETC_CONF")"
    ln -s "$CONF" "$ETC_CONF"
}

unlink_etc_conf() {
    if [[ -L "$ETC_CONF" && "$(readlink "$ETC_CONF")" == "$CONF" ]]; then
        rm -f "$ETC_CONF"
    fi
}

node_state() {
    # strip the power/reboot suffixes, keep '*' (not responding) so that it never reads idle
    sinfo --noheader --nodes=localhost --format=%T 2>/dev/null | head -n 1 | tr -d '~#$@^-'
}

cmd_status() {
    [[ -f "$CONF" ]] || { log "no cluster configured in $STATE"; return 1; }
    [[ "$(readlink "$ETC_CONF" 2>/dev/null)" == "$CONF" ]] ||
        { log "$ETC_CONF does not point to $CONF"; return 1; }
    live_pid "$MUNGED_PID" munged >/dev/null || { log "munged is not running"; return 1; }
    live_pid "$STATE/slurmctld.pid" slurmctld >/dev/null || { log "slurmctld is not running"; return 1; }
    live_pid "$STATE/slurmd.pid" slurmd >/dev/null || { log "slurmd is not running"; return 1; }
    local state
    state="$(node_state)"
    case "$state" in
        idle | mixed | allocated | completing) return 0 ;;
        *) log "node localhost is '${state:-not answering}'"; return 1 ;;
    esac
}

wait_for() {
    local what="$1" test="$2" i
    for ((i = 0; i < TIMEOUT * 2; i++)); do
        if eval "$test"; then return 0; fi
        sleep 0.5
    done
    die "timed out after ${TIMEOUT}s waiting for $what (logs in $STATE)"
}

cmd_start() {
    if cmd_status 2>/dev/null; then
        log "already running ($CONF)"
        return 0
    fi
    need_root
    cmd_install
    # a half-started or crashed cluster from an earlier run: clean it away first
    cmd_stop 2>/dev/null || true
    # and if this start fails, leave nothing running (the logs stay in $STATE)
    trap 'log "start failed, stopping what was started; logs in $STATE"; cmd_stop' EXIT

    mkdir -p "$STATE" "$STATE/ctld" "$STATE/slurmd" "$MUNGE_DIR"
    chmod 0755 "$STATE"
    chown munge:munge "$MUNGE_DIR"
    chmod 0755 "$MUNGE_DIR"
    write_conf

    link_etc_conf

    local key
    key="$(munge_key)"
    # one pretend GPU (no device behind it) so that `--gpus=1` requests can be scheduled
    echo "NodeName=localhost Name=gpu File=/dev/null" >"$STATE/gres.conf"

    log "starting munged"
    runuser -u munge -- munged \
        --socket="$MUNGE_SOCKET" --key-file="$key" \
        --pid-file="$MUNGED_PID" --log-file="$MUNGE_DIR/munged.log" \
        --seed-file="$MUNGE_DIR/munged.seed"
    wait_for "munged" "[[ -S '$MUNGE_SOCKET' ]] && live_pid '$MUNGED_PID' munged >/dev/null"

    log "starting slurmctld"
    # -c: start from a clean job state; -i: ignore errors in old state files
    slurmctld -c -i -f "$CONF"
    wait_for "slurmctld" "scontrol ping >/dev/null 2>&1"

    log "starting slurmd"
    slurmd -c -N localhost -f "$CONF"
    wait_for "node localhost" "[[ -n \"\$(node_state)\" && \"\$(node_state)\" != unknown ]]"
    case "$(node_state)" in
        down | drained | draining | drain | fail | failing)
            scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
    esac
    wait_for "node localhost to be idle" "[[ \"\$(node_state)\" == idle ]]"
    trap - EXIT
    log "cluster up: partition $PARTITION, node localhost idle; export SLURM_CONF=$CONF"
}

stop_pid_file() {
    local name="$1" file="$2" pid i
    pid="$(live_pid "$file" "$name")" || { rm -f "$file"; return 0; }
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$file"; return 0; }
        sleep 0.25
    done
    log "$name did not stop after SIGTERM, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$file"
}

cmd_stop() {
    if [[ -f "$CONF" ]] && live_pid "$STATE/slurmctld.pid" slurmctld >/dev/null; then
        # our cluster's jobs only: the controller is ours
        scancel --full --quiet --partition="$PARTITION" 2>/dev/null || true
        local i
        for ((i = 0; i < 20; i++)); do
            [[ -z "$(squeue --noheader --format=%i 2>/dev/null)" ]] && break
            sleep 0.5
        done
    fi
    stop_pid_file slurmd "$STATE/slurmd.pid"
    stop_pid_file slurmctld "$STATE/slurmctld.pid"
    stop_pid_file munged "$MUNGED_PID"
    unlink_etc_conf
}

cmd_env() {
    echo "export SLURM_CONF=$CONF"
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) echo "usage: $0 install|start|stop|status|env" >&2; exit 2 ;;
esac
