# Sourced by scripts/build-image and scripts/image-smoke: podman with what this machine needs.
#
# PODMAN               the podman command as an array: `"${PODMAN[@]}" build …`; on a host with
#                      the hybrid cgroup layout (v1 controllers plus a v2 "unified" mount),
#                      which crun refuses, it selects runc when that is installed
# PODMAN_LIMITS        --ulimit flags for `podman build` and `podman run`: without
#                      CAP_SYS_RESOURCE podman's default limits (nofile 1048576) cannot be set,
#                      so the container gets this shell's own; empty otherwise
# require_podman SKIP  exits (0 when SKIP is true, else 1) with a message if podman, or on a
#                      hybrid cgroup host runc, is missing

hybrid_cgroups() { [ -d /sys/fs/cgroup/unified ] && [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; }

require_podman() {
  local skip=$1 missing=""
  command -v podman >/dev/null 2>&1 || missing="podman"
  if hybrid_cgroups && ! command -v runc >/dev/null 2>&1; then
    missing="$missing runc"
  fi
  [ -z "$missing" ] && return 0
  echo "needs$missing (Debian's packages, no daemon): apt-get install$missing" >&2
  if hybrid_cgroups; then
    echo "(this host mixes cgroup v1 and v2, which crun, podman's default runtime, refuses: runc works)" >&2
  fi
  if [ "$skip" = true ]; then
    echo "skipping, as asked" >&2
    exit 0
  fi
  exit 1
}

PODMAN=(podman)
if hybrid_cgroups; then
  PODMAN=(podman --runtime runc)
fi

PODMAN_LIMITS=()
# CapEff bit 24 is CAP_SYS_RESOURCE.
if (((16#$(awk '/^CapEff:/ { print $2 }' /proc/self/status) >> 24 & 1) == 0)); then
  PODMAN_LIMITS=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit "nproc=4096:4096")
fi
