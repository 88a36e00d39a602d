#!/usr/bin/env bash
# Make this checkout's environment: .venv from the lock file, PostgreSQL and Redis reachable,
# podman serving the Docker Engine API, the locally built test image, and promtool and amtool for
# the examples' checks. Idempotent: each step checks first and does only what is missing. Prints
# one line per step; exits 1 naming what failed.
set -uo pipefail
cd "$(dirname "$0")/.."

PODMAN_SOCKET="${PODMAN_SOCKET:-/run/podman/podman.sock}"
TEST_IMAGE="${TEST_IMAGE:-localhost/remediate-test:3}"
failed=()
apt_updated=0

ok()   { printf '  ok    %s\n' "$*"; }
fail() { printf '  FAIL  %s\n' "$*" >&2; failed+=("$*"); }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
apt_install() {
  command -v apt-get >/dev/null || { echo "apt-get not found: install $* by hand" >&2; return 1; }
  if [ $apt_updated = 0 ]; then as_root apt-get update -qq >/dev/null && apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null 2>>/tmp/remediate-apt.log
}

echo "== remediate set-up =="

# 1. Python environment from the lock file, at .venv/ (CONTRACT.md).
if ! command -v uv >/dev/null; then
  python3 -m pip install -q uv >/dev/null 2>&1 || python3 -m pip install -q --user uv >/dev/null 2>&1
  export PATH="$HOME/.local/bin:$PATH"
fi
if command -v uv >/dev/null && uv sync --frozen -q 2>/tmp/remediate-uv.log; then
  ok "python environment .venv/ ($(.venv/bin/python --version 2>&1), locked by uv.lock)"
else
  fail "python environment: uv sync --frozen failed ($(tail -1 /tmp/remediate-uv.log 2>/dev/null))"
fi

# 1b. The own interpreter of the test backend shaped like the FastAPI template (its alembic
# imports sqlmodel, which the product's environment does not have): .cache/template-app/.
APP_VENV=.cache/template-app
APP_REQS=drills/assets/app_template/requirements.txt
if [ -x "$APP_VENV/bin/python" ] && cmp -s "$APP_REQS" "$APP_VENV/requirements.txt"; then
  ok "template-shaped app's interpreter $APP_VENV/ (as locked by $APP_REQS)"
elif uv venv -q --allow-existing --python "$(command -v python3)" "$APP_VENV" 2>>/tmp/remediate-uv.log \
  && uv pip install -q --python "$APP_VENV/bin/python" -r "$APP_REQS" 2>>/tmp/remediate-uv.log; then
  cp "$APP_REQS" "$APP_VENV/requirements.txt"
  ok "template-shaped app's interpreter $APP_VENV/ (installed from $APP_REQS)"
else
  fail "template-shaped app's interpreter: uv could not build $APP_VENV ($(tail -1 /tmp/remediate-uv.log 2>/dev/null))"
fi

# 2. PostgreSQL on 127.0.0.1:5432 (trust auth for postgres, as on this project's machines).
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! pg_up; then
  if ! command -v pg_ctlcluster >/dev/null; then
    apt_install postgresql postgresql-client && {
      hba=$(ls /etc/postgresql/*/main/pg_hba.conf | head -1)
      as_root sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/' "$hba"
    }
  fi
  for version in $(ls /etc/postgresql 2>/dev/null); do
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
  done
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
if pg_up && psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
  ok "PostgreSQL on 127.0.0.1:5432 ($(psql -h 127.0.0.1 -U postgres -Atqc 'show server_version'))"
else
  fail "PostgreSQL: nothing accepts user postgres on 127.0.0.1:5432"
fi

# 3. Redis on 127.0.0.1:6379.
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }
if ! redis_up; then
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null 2>&1 || true
  for _ in $(seq 1 20); do redis_up && break; sleep 0.5; done
fi
if redis_up; then ok "Redis on 127.0.0.1:6379"; else fail "Redis: no PONG from 127.0.0.1:6379"; fi

# 4. podman serving the Docker Engine API (ARCHITECTURE.md, "Real parts in tests").
if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
  apt_install podman runc || true
fi
if command -v podman >/dev/null; then
  conf=/etc/containers/containers.conf
  if ! grep -q 'remediate set-up' "$conf" 2>/dev/null; then
    as_root mkdir -p /etc/containers
    as_root tee -a "$conf" >/dev/null <<'CONF'
# remediate set-up: crun fails on this machine's hybrid cgroups, raising rlimits is refused
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
CONF
  fi
  api_up() { curl -sf --max-time 3 --unix-socket "$PODMAN_SOCKET" http://d/_ping >/dev/null 2>&1; }
  if ! api_up; then
    as_root mkdir -p "$(dirname "$PODMAN_SOCKET")"
    rm -f "$PODMAN_SOCKET" 2>/dev/null
    nohup podman system service --time=0 "unix://$PODMAN_SOCKET" >/tmp/remediate-podman.log 2>&1 &
    for _ in $(seq 1 30); do api_up && break; sleep 0.5; done
  fi
  if api_up; then
    ok "Docker Engine API (podman $(podman --version | awk '{print $3}')) at unix://$PODMAN_SOCKET"
  else
    fail "podman API: nothing answers on $PODMAN_SOCKET (see /tmp/remediate-podman.log)"
  fi
else
  fail "podman: not installed and could not be installed"
fi

# 5. The test image, built locally from Debian's busybox-static (no registry is reachable).
#    Its tag is its version: change what goes in, bump the tag, and every machine rebuilds it.
if command -v podman >/dev/null; then
  if ! podman image exists "$TEST_IMAGE" 2>/dev/null; then
    # A static busybox is the whole image. Debian's busybox-static ships one; when the machine's
    # /bin/busybox is not static, take the package's binary without installing it.
    busybox=/bin/busybox
    static() { [ -x "$1" ] && ldd "$1" 2>&1 | grep -q 'not a dynamic executable'; }
    if ! static "$busybox"; then
      if [ ! -e /bin/busybox ]; then apt_install busybox-static || true; fi
      if ! static "$busybox"; then
        debs=$(mktemp -d)
        (cd "$debs" && apt-get download busybox-static >/dev/null 2>&1) \
          && dpkg-deb -x "$debs"/busybox-static_*.deb "$debs/x" && busybox="$debs/x/bin/busybox"
      fi
    fi
    root=$(mktemp -d)
    mkdir -p "$root/bin" "$root/tmp" "$root/www" "$root/etc" "$root/data"
    chmod 1777 "$root/tmp" "$root/data"
    # Host directories (the machine's own PostgreSQL or Python) can be mounted read-only into a
    # container: keep Debian's merged-/usr layout so their loader and libraries resolve.
    mkdir -p "$root/usr/lib" "$root/lib64"
    ln -s usr/lib "$root/lib"
    cp "$busybox" "$root/bin/busybox"
    for applet in sh ls cat echo sleep env httpd nc wget grep sed printf mkdir rm kill ps true false; do
      ln -sf busybox "$root/bin/$applet"
    done
    echo 'root:x:0:0:root:/:/bin/sh' >"$root/etc/passwd"
    tar -C "$root" -c . | podman import --change 'CMD ["/bin/sh"]' - "$TEST_IMAGE" >/dev/null 2>&1
    rm -rf "$root"
  fi
  if out=$(podman run --rm "$TEST_IMAGE" /bin/echo image-ok 2>&1) && [ "$out" = image-ok ]; then
    ok "test image $TEST_IMAGE runs"
  else
    fail "test image $TEST_IMAGE: ${out:-not built}"
  fi
fi

# 6. promtool and amtool, which check the configuration examples (examples/, tests/integration/
#    test_examples.py): Debian's prometheus and prometheus-alertmanager. Only the tools are
#    wanted: the daemons the packages start on installation are stopped again.
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
if [ ${#missing[@]} -gt 0 ]; then
  apt_install --no-install-recommends "${missing[@]}" || true
  for service in "${missing[@]}"; do
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
      as_root systemctl disable --now "$service" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$service" ]; then
      as_root "/etc/init.d/$service" stop >/dev/null 2>&1 || true
    fi
  done
fi
if command -v promtool >/dev/null && command -v amtool >/dev/null; then
  ok "promtool $(promtool --version 2>&1 | awk 'NR==1 {print $3}') and amtool $(amtool --version 2>&1 | awk 'NR==1 {print $3}') (the examples' checks)"
else
  fail "promtool/amtool: Debian's prometheus and prometheus-alertmanager are not installed (see /tmp/remediate-apt.log)"
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "set-up failed: ${failed[*]}" >&2
  exit 1
fi
echo "set-up complete. DOCKER_HOST=unix://$PODMAN_SOCKET"
