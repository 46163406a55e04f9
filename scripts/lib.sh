# Shared by scripts/up, scripts/down, scripts/test and scripts/bench. Source it; do not run it.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Everything a running stack writes: config, key, databases, logs, pids, nginx prefix.
VAR=$(realpath -m -- "${SHOP_VAR:-$ROOT/var}")
# Where cargo builds: CARGO_TARGET_DIR when set, as cargo itself reads it.
TARGET=$(realpath -m -- "${CARGO_TARGET_DIR:-$ROOT/target}")

say() { printf '%s\n' "$*" >&2; }

# The benchmarks load a stack from one address (127.0.0.1) at rates no single client of a real
# shop has, often with one token standing for all its users: the limits at the door ([nginx]
# limit_*) and the backends' per-user share (backend.max_per_user) would measure themselves. A
# benchmark calls this before it starts a stack; scripts/up passes the SHOP__ overrides on to
# every part.
open_the_door() {
  export SHOP__NGINX__LIMIT_AUTH_PER_MINUTE=0 SHOP__NGINX__LIMIT_API_PER_SECOND=0 \
    SHOP__NGINX__LIMIT_CONNECTIONS_PER_ADDRESS=0 SHOP__BACKEND__MAX_PER_USER=0
}
# One `error:` line on stderr, then exit 1. DIED tells an EXIT trap the reason is said already.
die() { say "error: $*"; DIED=1; exit 1; }

# The calling script's header comment (after the shebang, up to the first line that is not a
# comment): its --help.
usage() { sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; }

# For a script that takes only positional arguments: --help prints its header and exits 0; an
# option (a word starting with -) is refused (exit 2) before it does anything.
takes_no_options() {
  local a
  for a in "$@"; do
    case $a in
      -h | --help) usage; exit 0 ;;
      -*) say "error: $(basename "$0") takes no option '$a' (see --help)"; exit 2 ;;
    esac
  done
}

# For a script whose settings are environment variables and which takes no argument: --help
# prints its header and exits 0; any other argument is refused (exit 2) before it does anything.
takes_no_arguments() {
  [ $# -eq 0 ] && return 0
  case $1 in
    -h | --help) usage; exit 0 ;;
    *) say "error: $(basename "$0") takes no arguments, not '$1' (its settings are environment variables: see --help)"; exit 2 ;;
  esac
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $* (install it yourself, or run as root)"; fi
}

# Installs Debian packages that are missing, running apt-get update once first.
ensure_packages() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]} ..."
  as_root apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

ensure_nginx() {
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || ensure_packages nginx-light
  NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
  "$NGINX_BIN" -V 2>&1 | grep -q -- --with-http_auth_request_module \
    || die "$NGINX_BIN lacks the auth_request module; install nginx-light or nginx-core"
  # njs: the rendered config loads it (nginx/shopgate.js: the header check, the log's path).
  [ -f /usr/lib/nginx/modules/ngx_http_js_module.so ] || ensure_packages libnginx-mod-http-js
}

# A free TCP port on HOST (default 127.0.0.1; asks the kernel for one, then releases it).
free_port() {
  python3 -c 'import socket,sys; h=sys.argv[1]; s=socket.socket(socket.AF_INET6 if ":" in h else socket.AF_INET); s.bind((h,0)); print(s.getsockname()[1]); s.close()' "${1:-127.0.0.1}"
}

# Whether ADDRESS (host:port) can be listened on now.
port_free() {
  python3 -c 'import socket,sys; h,p=sys.argv[1].rsplit(":",1); s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((h,int(p))); s.close()' "$1" 2>/dev/null
}

# Waits until URL answers 200, at most $2 seconds.
wait_http() {
  local url=$1 secs=${2:-30} ca=() i
  # A third argument: the CA file an https:// URL's certificate is checked with, or `insecure`.
  case ${3:-} in
    '') ;;
    insecure) ca=(--insecure) ;;
    *) ca=(--cacert "$3") ;;
  esac
  for ((i = 0; i < secs * 10; i++)); do
    curl -fsS -o /dev/null --max-time 1 ${ca[@]+"${ca[@]}"} "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# The last line of a log file, for a one-line error message.
last_words() {
  local line
  line=$(grep -v '^[[:space:]]*$' "$1" 2>/dev/null | tail -n 1) || true
  printf '%s' "${line:0:400}"
}

# Waits until the service NAME (pid in $VAR/run/NAME.pid) answers 200 at URL, at most SECS
# seconds; dies with its last log line if it exits first or does not answer in time. Any further
# arguments are curl's (a CA, a client certificate).
wait_service() {
  local name=$1 url=$2 secs=$3 log="$VAR/logs/$1.log" pid i
  shift 3
  pid=$(cat "$VAR/run/$name.pid")
  for ((i = 0; i < secs * 10; i++)); do
    curl -fsS -o /dev/null --max-time 1 "$@" "$url" 2>/dev/null && return 0
    running "$pid" || die "$name exited at start: $(last_words "$log") (log: $log)"
    sleep 0.1
  done
  die "$name did not pass its health check ($url) in ${secs}s: $(last_words "$log") (log: $log)"
}

# The value under KEY... in the stack's config ($SHOP_CONFIG), list items by index:
# `config_get verifier listen 0`.
config_get() {
  python3 - "$SHOP_CONFIG" "$@" <<'PY'
import sys, tomllib
value = tomllib.load(open(sys.argv[1], "rb"))
for key in sys.argv[2:]:
    value = value[int(key)] if isinstance(value, list) else value[key]
print(value)
PY
}

# The resident set of process PID in MiB, one decimal ("12.3").
rss_mib() { ps -o rss= -p "$1" | awk '{printf "%.1f", $1/1024}'; }

# Where the binaries are: SHOP_BIN if set (a folder of other builds, for scripts/bench-builds), else
# $TARGET/release, or $TARGET/debug with SHOP_PROFILE=debug.
profile_dir() {
  if [ -n "${SHOP_BIN:-}" ]; then echo "$SHOP_BIN"
  elif [ "${SHOP_PROFILE:-release}" = debug ]; then echo "$TARGET/debug"
  else echo "$TARGET/release"; fi
}

# users_file FILE FIRST_ID COUNT STEP: "ID TOKEN" lines for wrk's scripts, COUNT users from FIRST_ID
# STEP apart, each token minted by $(profile_dir)/shopctl with SHOP_CONFIG's key.
users_file() {
  local id shopctl
  shopctl="$(profile_dir)/shopctl"
  for ((id = $2; id < $2 + $3 * $4; id += $4)); do
    echo "$id $("$shopctl" tokens mint --user-id "$id" --email "bench$id@example.com")"
  done >"$1"
}

# stack_procs VAR LABEL [DB_LABEL]: the `--proc NAME=PID` arguments of scripts/rounds for the stack
# under VAR: nginx, verifier, backend-a and backend-b as NAME-LABEL and, if its shards are on MariaDB,
# a-primary, a-replica, b-primary and b-replica as NAME-DB_LABEL (NAME alone without DB_LABEL).
stack_procs() {
  local var=$1 label=$2 db=${3:+-$3} svc inst
  echo "--proc nginx-$label=$(cat "$var/nginx/nginx.pid")"
  for svc in verifier backend-a backend-b; do echo "--proc $svc-$label=$(cat "$var/run/$svc.pid")"; done
  if [ -d "$var/mariadb" ]; then
    for inst in a-primary a-replica b-primary b-replica; do echo "--proc $inst$db=$(cat "$var/mariadb/$inst/mysqld.pid")"; done
  fi
}

# SHOP_BUILD=0 skips the build (a benchmark that has built once, or a build already running), and
# so does SHOP_BIN.
build_binaries() {
  [ "${SHOP_BUILD:-1}" = 0 ] && return 0
  [ -n "${SHOP_BIN:-}" ] && return 0
  local flag=--release
  [ "${SHOP_PROFILE:-release}" = debug ] && flag=
  local profile=debug
  [ -n "$flag" ] && profile=release
  if [ -x "$TARGET/$profile/verifier" ]; then
    say "building ($profile) ..."
  else
    say "building ($profile) for the first time: about 5 minutes on 2 cores; cargo shows its progress"
  fi
  # cargo's own progress (a bar on a terminal, one line per crate otherwise), so a cold build
  # does not look hung; nothing at all when everything is up to date.
  (cd "$ROOT" && cargo build $flag --color never -p shopgate-verifier -p shopgate-backend -p shopctl 2>&1 \
    | { grep -v '^ *Finished ' >&2 || true; })
}

# Starts "$@" in the background with its output in $VAR/logs/NAME.log and its pid in $VAR/run/NAME.pid.
start_bg() {
  local name=$1; shift
  mkdir -p "$VAR/logs" "$VAR/run"
  # SHOP_STACK_DIR marks the process as this stack's (see `ours`), whatever its command line;
  # SHOP_LOG_FILE is the file our services reopen on USR1, when scripts/rotate-logs has moved it.
  SHOP_STACK_DIR="$VAR/" SHOP_LOG_FILE="$VAR/logs/$name.log" nohup "$@" >>"$VAR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$VAR/run/$name.pid"
}

# How long scripts/down waits for a process to stop before it kills it: more than the services'
# own stop deadline (10 s for requests in flight, core/src/service.rs).
STOP_WAIT=${SHOP_STOP_WAIT:-15}

# Stops the processes named by pid files: SIGNAL (default TERM: the services stop accepting,
# finish what is in flight and close their pools) to all, then waits up to STOP_WAIT seconds for
# all of them; only then SIGKILL to what is left, and to its children (nginx's workers). Adds to
# STOPPED how many it signalled.
stop_pidfiles() {
  local sig=TERM pids=() f pid i alive
  if [ "${1:-}" = --signal ]; then sig=$2; shift 2; fi
  for f in "$@"; do
    [ -f "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null || true)
    # Only a process of this stack: its command line names this folder (--config $VAR/shop.toml,
    # nginx's -p $VAR/nginx). A pid file copied from elsewhere, or a pid the system has given to
    # another process since, is left alone.
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && ours "$pid"; then
      kill -"$sig" "$pid" 2>/dev/null || true
      pids+=("$pid")
      STOPPED=$((${STOPPED:-0} + 1))
    fi
  done
  for ((i = 0; i < STOP_WAIT * 10 && ${#pids[@]} > 0; i++)); do
    alive=()
    for pid in "${pids[@]}"; do running "$pid" && alive+=("$pid"); done
    pids=(${alive[@]+"${alive[@]}"})
    [ ${#pids[@]} -gt 0 ] && sleep 0.1
  done
  for pid in ${pids[@]+"${pids[@]}"}; do
    say "pid $pid did not stop within ${STOP_WAIT}s; killing it"
    pkill -KILL -P "$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -f "$@"
}

# Whether PID is this stack's: its command line names this stack's folder, or start_bg marked it
# (SHOP_STACK_DIR in its environment: the nginx exporter's flags name no folder).
ours() {
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$VAR/" \
    || tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | grep -qxF -- "SHOP_STACK_DIR=$VAR/"
}

# Whether PID runs (a zombie, exited but not yet reaped by its parent, does not).
running() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "${state#Z}" = "$state" ]
}
