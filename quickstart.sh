#!/usr/bin/env bash
# audiopolicyd quick start, for a fresh Debian 12, Debian 13 or Ubuntu 24.04 machine.
#
#   ./quickstart.sh run    install what is missing, then run the daemon in the foreground
#   ./quickstart.sh test   install what is missing, then run every test (unit + integration)
#   ./quickstart.sh lint   install ruff and mypy (the `lint` extra), then check the pure core
#
# "Install" means: the Debian packages below (apt-get, as root or through sudo) and a virtual
# environment in .venv with audiopolicyd installed editable. Both steps are skipped when done.
# Arguments after the command go to the daemon or to pytest (`./quickstart.sh test tests/unit`).
# PYTHON=python3.12 uses that interpreter instead of python3, in its own .venv-3.12.
#
# `run` uses the audio server and session bus of your desktop session when there are some. On
# a machine without them (a fresh server, a container, CI) it starts a private session bus and a
# private headless PulseAudio with virtual devices (speaker, headphones, mic) and says so.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

# Debian packages: audio servers and clients the daemon and its tests use, and what building
# systemd-python needs. Each name exists in Debian 12 and 13 (checked with apt-cache policy).
APT_PACKAGES=(
  python3 python3-venv python3-dev gcc pkg-config libsystemd-dev
  dbus pulseaudio pulseaudio-utils pipewire pipewire-pulse wireplumber
  mpv mpv-mpris playerctl sox espeak-ng systemd xdg-desktop-portal
  libglib2.0-bin dconf-service gsettings-desktop-schemas pipewire-bin bubblewrap
)

say() { printf 'quickstart: %s\n' "$*" >&2; }

install_apt() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# The interpreter and its virtual environment: python3 in .venv, or $PYTHON in .venv-X.Y (so
# several Pythons can be tested side by side, as .ci/run does).
python=${PYTHON:-python3}
venv=.venv
if [ -n "${PYTHON:-}" ]; then
  version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])') ||
    { say "PYTHON=$PYTHON does not run"; exit 1; }
  venv=.venv-$version
fi

install_venv() {
  local stamp=$venv/.installed
  if [ -x "$venv/bin/audiopolicyd" ] && [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] &&
      "$venv/bin/python" -c '' 2>/dev/null; then
    return 0
  fi
  # a venv whose interpreter is gone (a Python upgraded or uninstalled) is made anew
  if [ -e "$venv" ] && ! "$venv/bin/python" -c '' 2>/dev/null; then
    rm -rf "$venv"
  fi
  say "creating $venv ($("$python" --version 2>&1)) and installing audiopolicyd with its test dependencies"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -e '.[test]'
  touch "$stamp"
}

# ruff and mypy, pinned in pyproject.toml's `lint` extra, into the same environment.
install_lint() {
  local stamp=$venv/.installed-lint
  if [ -x "$venv/bin/ruff" ] && [ -x "$venv/bin/mypy" ] && [ -f "$stamp" ] &&
      [ "$stamp" -nt pyproject.toml ]; then
    return 0
  fi
  say "installing the lint tools (ruff, mypy) into $venv"
  "$venv/bin/python" -m pip install -q -e '.[test,lint]'
  touch "$stamp"
}

# The files checked: pyproject.toml's [tool.mypy] files (the pure core), one list for both.
lint_files() {
  "$venv/bin/python" - <<'PY'
try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["tool"]["mypy"]["files"]))
PY
}

# A private session bus, for a machine that has none.
private_bus() {
  local dir=$1
  dbus-daemon --session --address="unix:path=$dir/bus" --fork --print-pid >"$dir/bus.pid"
  export DBUS_SESSION_BUS_ADDRESS="unix:path=$dir/bus"
  say "no session bus: started a private one at $DBUS_SESSION_BUS_ADDRESS"
}

# A private headless PulseAudio with virtual devices, for a machine with no audio server.
private_pulse() {
  local dir=$1
  mkdir -p "$dir/pulse-runtime" "$dir/home"
  chmod 700 "$dir/pulse-runtime"
  cat >"$dir/default.pa" <<'PA'
load-module module-native-protocol-unix
load-module module-null-sink sink_name=speaker sink_properties=device.description=Speaker
load-module module-null-sink sink_name=headphones sink_properties="device.description=Headphones device.form_factor=headphone"
load-module module-sine-source source_name=mic frequency=440
load-module module-stream-restore
set-default-sink speaker
set-default-source mic
PA
  XDG_RUNTIME_DIR="$dir/pulse-runtime" HOME="$dir/home" pulseaudio -n -F "$dir/default.pa" \
    --daemonize=no --exit-idle-time=-1 --log-target=file:"$dir/pulseaudio.log" 2>/dev/null &
  echo $! >"$dir/pulseaudio.pid"
  export PULSE_SERVER="unix:$dir/pulse-runtime/pulse/native"
  for _ in $(seq 50); do pactl info >/dev/null 2>&1 && break; sleep 0.1; done
  pactl info >/dev/null 2>&1 || { say "the private PulseAudio did not start: see $dir/pulseaudio.log"; exit 1; }
  say "no audio server: started a private headless PulseAudio (sinks speaker, headphones; source mic)"
  say "to play into it from another shell:"
  say "  export PULSE_SERVER=$PULSE_SERVER DBUS_SESSION_BUS_ADDRESS=$DBUS_SESSION_BUS_ADDRESS"
  say "  paplay --property=media.role=music some.wav   # then a media.role=phone stream ducks it"
}

cleanup_private() {
  local dir=$1 f
  for f in "$dir/pulseaudio.pid" "$dir/bus.pid"; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
  rm -rf "$dir"
}

cmd=${1:-}
case "$cmd" in
  run)
    install_apt
    install_venv
    private=$(mktemp -d /tmp/audiopolicyd-quickstart.XXXXXX)
    trap 'cleanup_private "$private"' EXIT
    [ -n "${DBUS_SESSION_BUS_ADDRESS:-}" ] || private_bus "$private"
    pactl info >/dev/null 2>&1 || private_pulse "$private"
    say "running audiopolicyd (Ctrl-C stops it and restores every stream)"
    say "in another shell: $venv/bin/audiopolicyctl status | streams | monitor"
    "$venv/bin/audiopolicyd" "${@:2}"
    ;;
  test)
    install_apt
    install_venv
    # no path given: pytest runs pyproject.toml's testpaths (tests/, unit + integration)
    exec "$venv/bin/python" -m pytest -q "${@:2}"
    ;;
  lint)
    install_venv
    install_lint
    mapfile -t files < <(lint_files)
    rc=0
    say "ruff check (${#files[@]} files)"
    "$venv/bin/ruff" check "${files[@]}" || rc=1
    say "mypy"
    "$venv/bin/mypy" || rc=1
    exit $rc
    ;;
  *)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
