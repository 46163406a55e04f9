# Shared by scripts/up, scripts/down, scripts/test and scripts/bench. Source it; do not run it.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Everything a running stack writes: config, key, databases, logs, pids, nginx prefix.
VAR=${SHOP_VAR:-$ROOT/var}

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

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
}

# A free TCP port on 127.0.0.1 (asks the kernel for one, then releases it).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Waits until URL answers 200, at most $2 seconds.
wait_http() {
  local url=$1 secs=${2:-30} i
  for ((i = 0; i < secs * 10; i++)); do
    curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# The development key: 32 random bytes as 64 hex characters, generated once, mode 0600.
ensure_dev_key() {
  local key=$1
  [ -s "$key" ] && return 0
  (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$key")
}

profile_dir() { if [ "${SHOP_PROFILE:-release}" = debug ]; then echo "$ROOT/target/debug"; else echo "$ROOT/target/release"; fi; }

build_binaries() {
  local flag=--release
  [ "${SHOP_PROFILE:-release}" = debug ] && flag=
  say "building ($([ -n "$flag" ] && echo release || echo debug)) ..."
  (cd "$ROOT" && cargo build $flag -q -p shopgate-verifier -p shopgate-backend -p shopctl)
}

# Starts "$@" in the background with its output in $VAR/logs/NAME.log and its pid in $VAR/run/NAME.pid.
start_bg() {
  local name=$1; shift
  mkdir -p "$VAR/logs" "$VAR/run"
  nohup "$@" >>"$VAR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$VAR/run/$name.pid"
}

stop_pidfile() {
  local f=$1 pid i
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}
