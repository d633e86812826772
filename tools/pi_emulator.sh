#!/usr/bin/env bash
# An emulated arm64 "Raspberry Pi OS 12"-like system on an x86 Linux machine, for checking that a
# deployment bundle runs on a Pi: Debian bookworm arm64 (Python 3.11, glibc 2.36, as Raspberry Pi OS 12)
# in a chroot, executed by user-mode QEMU with a Pi 4 (cortex-a72) or a Pi 5 (cortex-a76) CPU model.
#
#   tools/pi_emulator.sh setup                         # build the root once (minutes, ~510 MB), then cached
#   tools/pi_emulator.sh status                        # what is there, what is missing
#   tools/pi_emulator.sh run cortex-a72 [--dir D] -- python run.py digit.png
#   tools/pi_emulator.sh shell cortex-a76 [--dir D]    # an interactive shell in the root
#   tools/pi_emulator.sh clean                         # delete the root and the wheel cache
#
# `run` binds host folder D (default: the current one) at /work inside the root, works there, and puts
# /opt/qsal-venv/bin (numpy, onnxruntime, pillow: the versions of the host's .venv) first on PATH.
#
# Needs root privileges and the Debian packages qemu-user-static, binfmt-support and debootstrap.
# `setup` mounts binfmt_misc and enables qemu-aarch64 (a machine-wide kernel setting, as installing
# qemu-user-static on a desktop does). Every other mount (/proc, the fake /proc/cpuinfo, a /sys holding
# only the Pi's 4 CPUs, /dev, /tmp, D) lives in a private mount namespace of the command and
# disappears with it.
#
# Why a fake /proc/cpuinfo: user-mode QEMU 7.2 passes the host's x86 /proc/cpuinfo through, and
# onnxruntime's CPU detection (pytorch/cpuinfo) dies on it with a segmentation fault. Each run sees a
# plausible Pi 4 / Pi 5 cpuinfo instead; the instruction set features a program gets from the kernel
# (HWCAP) are those of QEMU's CPU model.
#
# Emulated timings are not Pi timings (QEMU translates every instruction): this checks function only.
#
# Environment: QSAL_PI_ROOT (default ~/.cache/qsal_lab/pi-root-bookworm-arm64), QSAL_PI_WHEELS (default
# ~/.cache/qsal_lab/pi-wheels-cp311-aarch64), QSAL_PI_MIRROR (default: the Debian mirror apt uses here),
# QSAL_PI_PYTHON (host Python whose numpy/onnxruntime/pillow versions are pinned; default .venv/bin/python),
# QSAL_PI_PACKAGES (override the pins, e.g. "onnxruntime==1.22.0 numpy pillow").
set -euo pipefail

PROG=tools/pi_emulator.sh
REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${QSAL_PI_ROOT:-$HOME/.cache/qsal_lab/pi-root-bookworm-arm64}
WHEELS=${QSAL_PI_WHEELS:-$HOME/.cache/qsal_lab/pi-wheels-cp311-aarch64}
HOST_PYTHON=${QSAL_PI_PYTHON:-$REPO/.venv/bin/python}
SUITE=bookworm
VENV=/opt/qsal-venv
CPUS="cortex-a72 cortex-a76"
DEBOOTSTRAP_DONE=$ROOT/etc/qsal-debootstrap-done  # written last, so a half-built root is rebuilt
VENV_DONE=$ROOT$VENV/qsal-installed                  # holds the installed pins; other pins -> reinstall

die() { echo "$PROG: error: $*" >&2; exit 2; }
say() { echo "[pi-emulator] $*" >&2; }

# ----------------------------------------------------------------------------- preconditions

missing_tools() {  # prints what is missing to build and run the root, nothing if all is there
  [ "$(id -u)" = 0 ] || echo "root privileges (mounts, chroot, binfmt_misc)"
  command -v qemu-aarch64-static >/dev/null || echo "qemu-aarch64-static (apt-get install qemu-user-static)"
  command -v update-binfmts >/dev/null || echo "update-binfmts (apt-get install binfmt-support)"
  command -v debootstrap >/dev/null || echo "debootstrap (apt-get install debootstrap)"
  command -v unshare >/dev/null || echo "unshare (util-linux)"
  return 0
}

require_tools() {
  local missing
  missing=$(missing_tools)
  [ -z "$missing" ] || die "cannot emulate a Pi here, missing: $(echo "$missing" | paste -sd ';' | sed 's/;/; /g')"
}

binfmt_enabled() { [ "$(head -n1 /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null)" = enabled ]; }

enable_binfmt() {  # the kernel hands aarch64 ELF files to qemu-aarch64-static (F flag: works in chroots)
  if ! mountpoint -q /proc/sys/fs/binfmt_misc; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null ||
      die "cannot mount binfmt_misc at /proc/sys/fs/binfmt_misc (a container without --privileged?)"
  fi
  binfmt_enabled || update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  binfmt_enabled || die "cannot enable qemu-aarch64 in binfmt_misc (update-binfmts --enable qemu-aarch64 failed)"
}

debian_mirror() {  # the Debian mirror apt is configured with here (deb822 or one-line format)
  if [ -n "${QSAL_PI_MIRROR:-}" ]; then echo "$QSAL_PI_MIRROR"; return; fi
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '
      /^URIs:/ {u=$2} /^Suites:/ && u != "" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+$/) {print u; exit}}
      /^$/ {u=""}')
  [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $3 ~ /^[a-z]+$/ && $2 !~ /security/ {print $2; exit}' \
                           /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

pins() {  # the packages to install in the root: the host's versions, so both sides run the same ORT
  if [ -n "${QSAL_PI_PACKAGES:-}" ]; then echo "$QSAL_PI_PACKAGES"; return; fi
  [ -x "$HOST_PYTHON" ] || die "no host Python at $HOST_PYTHON to copy the versions from; run 'make install' or set QSAL_PI_PYTHON (or QSAL_PI_PACKAGES)"
  "$HOST_PYTHON" - <<'EOF'
from importlib.metadata import version
print(" ".join(f"{name}=={version(name)}" for name in ("onnxruntime", "numpy", "pillow")))
EOF
}

# ----------------------------------------------------------------------------- running inside the root

cpuinfo_text() {  # cpuinfo_text CPU: four cores as the Pi's (Raspberry Pi OS 12) kernel describes them
  local features variant part revision hardware model
  case $1 in
    cortex-a72) features="fp asimd evtstrm crc32 cpuid"; variant=0x0; part=0xd08; revision=3
                hardware=BCM2711; model="Raspberry Pi 4 Model B Rev 1.5" ;;
    cortex-a76) features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
                variant=0x4; part=0xd0b; revision=1; hardware=BCM2712; model="Raspberry Pi 5 Model B Rev 1.0" ;;
    *) die "unknown CPU model '$1'; use one of: $CPUS" ;;
  esac
  local core
  for core in 0 1 2 3; do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\n' \
      "$core" "$features"
    printf 'CPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' "$variant" "$part" "$revision"
  done
  printf 'Hardware\t: %s\nRevision\t: 0\nSerial\t\t: 0000000000000000\nModel\t\t: %s (emulated)\n' "$hardware" "$model"
}

in_root() {  # in_root CPU HOST_DIR GUEST_DIR CWD CMD...: run CMD in the root, mounts private to it
  local cpu=$1 host_dir=$2 guest_dir=$3 cwd=$4
  shift 4
  case " $CPUS " in *" $cpu "*) ;; *) die "unknown CPU model '$cpu'; use one of: $CPUS" ;; esac
  [ -f "$DEBOOTSTRAP_DONE" ] || die "no emulated Pi root at $ROOT; run '$PROG setup' first"
  binfmt_enabled || enable_binfmt
  [ -f "$ROOT/etc/qsal-cpuinfo/$cpu" ] || { mkdir -p "$ROOT/etc/qsal-cpuinfo"; cpuinfo_text "$cpu" > "$ROOT/etc/qsal-cpuinfo/$cpu"; }
  # unshare -m: a new mount namespace with private propagation, so nothing below leaks to the host,
  # and the kernel drops every one of these mounts when the command ends (even on kill -9).
  unshare --mount --propagation private -- /bin/bash -c '
    set -e
    root=$1 cpu=$2 host_dir=$3 guest_dir=$4 cwd=$5 venv=$6 chroot=$7
    shift 7
    mount -t proc proc "$root/proc"
    mount --bind "$root/etc/qsal-cpuinfo/$cpu" "$root/proc/cpuinfo"
    # A Pi 5 / Pi 4 has 4 cores: onnxruntime'"'"'s cpuinfo library counts them in /sys before it parses
    # /proc/cpuinfo (without them it gives up and guesses the CPU features). Nothing else of /sys.
    mount -t tmpfs -o mode=755,size=1m sys "$root/sys"
    mkdir -p "$root/sys/devices/system/cpu"
    for list in possible present online; do echo 0-3 > "$root/sys/devices/system/cpu/$list"; done
    mount -t tmpfs -o mode=755,size=1m dev "$root/dev"
    for node in null zero full random urandom tty; do
      touch "$root/dev/$node" && mount --bind "/dev/$node" "$root/dev/$node"
    done
    ln -s /proc/self/fd "$root/dev/fd"
    mount -t tmpfs -o mode=1777 tmp "$root/tmp"
    if [ -n "$host_dir" ]; then
      mkdir -p "$root$guest_dir"
      mount --bind "$host_dir" "$root$guest_dir"
    fi
    exec env -i QEMU_CPU="$cpu" PATH="$venv/bin:/usr/local/bin:/usr/bin:/bin" HOME=/root LANG=C.UTF-8 \
      TERM="${TERM:-dumb}" OMP_NUM_THREADS=1 PYTHONDONTWRITEBYTECODE=1 \
      "$chroot" "$root" /bin/sh -c "cd \"\$0\" && exec \"\$@\"" "$cwd" "$@"
  ' in_root "$ROOT" "$cpu" "$host_dir" "$guest_dir" "$cwd" "$VENV" "$(command -v chroot)" "$@"
}

# ----------------------------------------------------------------------------- setup

setup_root() {  # debootstrap bookworm arm64 (minbase) into $ROOT, once
  if [ -f "$DEBOOTSTRAP_DONE" ]; then say "root: cached at $ROOT"; return; fi
  local mirror partial=$ROOT.partial began=$SECONDS
  mirror=$(debian_mirror)
  say "root: debootstrap $SUITE arm64 from $mirror into $ROOT (3-12 minutes: dpkg runs emulated) ..."
  rm -rf "$partial"
  mkdir -p "$(dirname "$ROOT")"
  if ! debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        "$SUITE" "$partial" "$mirror" > "$partial.log" 2>&1; then
    tail -n 15 "$partial.log" >&2
    die "debootstrap failed (log: $partial.log); is $mirror reachable? set QSAL_PI_MIRROR to another Debian mirror"
  fi
  mv "$partial.log" "$partial/var/log/qsal-debootstrap.log"
  rm -rf "$ROOT"
  mv "$partial" "$ROOT"
  echo "$SUITE arm64 minbase from $mirror, $(date -u +%FT%TZ)" > "$DEBOOTSTRAP_DONE"
  say "root: built in $((SECONDS - began)) s"
}

setup_venv() {  # numpy, onnxruntime, pillow (aarch64 cp311 wheels) in $VENV inside the root, offline
  local want
  want=$(pins)
  if [ "$(cat "$VENV_DONE" 2>/dev/null)" = "$want" ]; then say "venv: cached ($want)"; return; fi
  local began=$SECONDS
  say "venv: downloading aarch64 wheels for $want into $WHEELS ..."
  mkdir -p "$WHEELS"
  local pip=("$HOST_PYTHON" -m pip)
  [ -x "$HOST_PYTHON" ] || pip=(python3 -m pip)
  # shellcheck disable=SC2086  # $want is a list of requirements
  "${pip[@]}" download --quiet --disable-pip-version-check --only-binary=:all: --dest "$WHEELS" \
      --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 --python-version 3.11 \
      --implementation cp $want ||
    die "pip download of aarch64 cp311 wheels for '$want' failed (no such wheels on PyPI, or no network)"
  say "venv: installing them offline into $VENV inside the root (emulated, 1-3 minutes) ..."
  rm -rf "${ROOT:?}$VENV"
  # shellcheck disable=SC2086
  in_root cortex-a72 "$WHEELS" /mnt/wheels / /bin/sh -c \
    "python3 -m venv $VENV && $VENV/bin/pip install --quiet --disable-pip-version-check --no-index --find-links /mnt/wheels $want" ||
    die "installing the wheels inside the root failed; '$PROG clean' and '$PROG setup' start again"
  echo "$want" > "$VENV_DONE"
  say "venv: installed in $((SECONDS - began)) s"
}

setup() {
  require_tools
  local began=$SECONDS
  mkdir -p "$(dirname "$ROOT")"
  exec 9> "$ROOT.lock"  # two setups at once (two test runs) take turns instead of sharing a half-built root
  flock 9
  enable_binfmt
  setup_root
  local cpu
  mkdir -p "$ROOT/etc/qsal-cpuinfo"
  for cpu in $CPUS; do cpuinfo_text "$cpu" > "$ROOT/etc/qsal-cpuinfo/$cpu"; done
  setup_venv
  say "ready in $((SECONDS - began)) s: $ROOT ($(du -sh "$ROOT" | cut -f1))"
}

# ----------------------------------------------------------------------------- the other commands

status() {
  local missing
  missing=$(missing_tools)
  echo "root:      $ROOT"
  echo "wheels:    $WHEELS"
  if [ -n "$missing" ]; then echo "missing:   $(echo "$missing" | paste -sd ';' | sed 's/;/; /g')"; fi
  if binfmt_enabled; then echo "binfmt:    qemu-aarch64 enabled"; else echo "binfmt:    qemu-aarch64 not enabled (setup enables it)"; fi
  if [ ! -f "$DEBOOTSTRAP_DONE" ]; then echo "state:     not set up (run '$PROG setup')"; return 0; fi
  echo "built:     $(cat "$DEBOOTSTRAP_DONE")"
  echo "size:      $(du -sh "$ROOT" | cut -f1)"
  echo "venv:      $(cat "$VENV_DONE" 2>/dev/null || echo 'not installed (run setup)')"
  [ -z "$missing" ] || return 0
  local cpu
  for cpu in $CPUS; do
    echo "$cpu: $(in_root "$cpu" "" "" / /bin/sh -c \
      'echo "$(uname -m), $(python3 --version), glibc $(ldd --version | head -n1 | grep -o "[0-9.]*$"), onnxruntime $(python -c "import onnxruntime; print(onnxruntime.__version__)" 2>&1 | tail -n1)"')"
  done
}

parse_dir() {  # sets HOST_DIR from an optional --dir D
  HOST_DIR=$PWD
  if [ "${1:-}" = --dir ]; then
    [ -n "${2:-}" ] || die "--dir needs a folder"
    [ -d "$2" ] || die "--dir $2 is not a folder"
    HOST_DIR=$(cd "$2" && pwd)
  fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
  setup) setup ;;
  status) status ;;
  run)
    [ $# -ge 1 ] || die "usage: $PROG run CPU [--dir D] -- CMD..."
    cpu=$1; shift
    parse_dir "$@"
    [ "${1:-}" = --dir ] && shift 2
    [ "${1:-}" = -- ] && shift
    [ $# -ge 1 ] || die "usage: $PROG run CPU [--dir D] -- CMD... (no command given)"
    require_tools
    in_root "$cpu" "$HOST_DIR" /work /work "$@" ;;
  shell)
    [ $# -ge 1 ] || die "usage: $PROG shell CPU [--dir D]"
    cpu=$1; shift
    parse_dir "$@"
    require_tools
    in_root "$cpu" "$HOST_DIR" /work /work /bin/bash -i ;;
  clean)
    ! grep -q " $ROOT/" /proc/self/mountinfo || die "something is mounted inside $ROOT; end the runs using it first"
    rm -rf "$ROOT" "$ROOT.partial" "$ROOT.partial.log" "$ROOT.lock" "$WHEELS"
    say "removed $ROOT and $WHEELS" ;;
  ""|-h|--help|help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) die "unknown command '$cmd'; use setup, status, run, shell or clean (see $PROG --help)" ;;
esac
