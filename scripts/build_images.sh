#!/usr/bin/env bash
# Build MAIE's container images with podman or docker (whichever works here); print each one's size
# and build time.
#
#   bash scripts/build_images.sh                      # api and runner
#   bash scripts/build_images.sh api runner runner-gpu
#
#   api         Dockerfile.api                        → ${IMAGE_PREFIX}maie-api:${TAG}
#               the API and the operator; no model runtime
#   runner      Dockerfile.runner (target runner)     → ${IMAGE_PREFIX}maie-runner:${TAG}
#               CPU: faster-whisper int8, llama.cpp built portable, the bundled models
#   runner-gpu  Dockerfile.runner (target runner-gpu) → ${IMAGE_PREFIX}maie-runner-gpu:${TAG}
#               CUDA: vLLM + torch with the nvidia-*-cu12 wheels, llama.cpp with CUDA kernels. Large
#               (docs/kubernetes.md: Images): built only when asked for.
#
# Settings (environment):
#   BASE_IMAGE     the one base of every image (default docker.io/library/python:3.11-slim). When
#                  it is not present and cannot be pulled (no registry reachable), a stand-in is
#                  built once from Debian packages with debootstrap (Debian's Python 3.11):
#                  localhost/maie-base:py311-bookworm. Nothing else differs between the two.
#   IMAGE_PREFIX   name prefix (default ghcr.io/maie/, as the chart's values)
#   TAG            default: the version in pyproject.toml
#   ENGINE         podman | docker (default: the first that answers; podman is installed with
#                  apt-get when neither does and this is a root shell)
#   CUDA_ARCHITECTURES  GPU architectures of llama.cpp's CUDA kernels (default 80;86;89;90)
#   PIP_CERT       a CA bundle pip must trust inside the build (a TLS-intercepting proxy); passed as
#                  a build secret, never stored in a layer
#   BUILD_ARGS     more arguments for `build` (e.g. --no-cache)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

IMAGES=("$@")
[[ ${#IMAGES[@]} -gt 0 ]] || IMAGES=(api runner)
for image in "${IMAGES[@]}"; do
  case "$image" in
    api | runner | runner-gpu) ;;
    *) echo "error: unknown image '$image' (api, runner, runner-gpu)" >&2; exit 2 ;;
  esac
done

STAND_IN="localhost/maie-base:py311-bookworm"
OFFICIAL="docker.io/library/python:3.11-slim"  # fully qualified: no short-name lookup in podman
BASE_IMAGE="${BASE_IMAGE:-$OFFICIAL}"
IMAGE_PREFIX="${IMAGE_PREFIX:-ghcr.io/maie/}"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)"
TAG="${TAG:-$VERSION}"
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
if [[ "$REVISION" != unknown && -n "$(git status --porcelain 2>/dev/null)" ]]; then
  REVISION="$REVISION-dirty"
fi
SOURCE="${SOURCE_URL:-$(git config --get remote.origin.url 2>/dev/null || echo https://github.com/maie/maie)}"

# ---- the engine -------------------------------------------------------------------------------
works() { "$1" info >/dev/null 2>&1; }
ENGINE="${ENGINE:-}"
if [[ -z "$ENGINE" ]]; then
  for candidate in podman docker; do
    if command -v "$candidate" >/dev/null 2>&1 && works "$candidate"; then ENGINE="$candidate"; break; fi
  done
fi
if [[ -z "$ENGINE" ]]; then
  bash scripts/install_podman.sh && works podman && ENGINE=podman
fi
[[ -n "$ENGINE" ]] || { echo "error: neither podman nor docker works here" >&2; exit 2; }

FLAGS=()
if [[ "$ENGINE" == podman ]]; then
  # runc: crun stops with "cgroups in hybrid mode not supported" on some hosts. Ulimits no higher
  # than this shell's hard limits (podman raises them otherwise, which needs CAP_SYS_RESOURCE).
  command -v runc >/dev/null 2>&1 && FLAGS+=(--runtime runc)
  for limit in nofile:n nproc:u; do
    hard="$(ulimit -H"${limit#*:}")"
    [[ "$hard" == unlimited ]] || FLAGS+=(--ulimit "${limit%:*}=$((hard < 4096 ? hard : 4096)):$((hard < 4096 ? hard : 4096))")
  done
fi

have_image() {
  if [[ "$ENGINE" == podman ]]; then podman image exists "$1"; else docker image inspect "$1" >/dev/null 2>&1; fi
}

# ---- the base ---------------------------------------------------------------------------------
build_stand_in() {
  # Debian bookworm's Python 3.11 (at /usr/bin/python3; the official image has its own in /usr/local)
  # with venv and CA certificates, trimmed as the slim images are (no apt lists, docs, locales).
  command -v debootstrap >/dev/null 2>&1 || bash scripts/install_podman.sh
  command -v debootstrap >/dev/null 2>&1 || { echo "error: debootstrap is needed for the stand-in base" >&2; exit 2; }
  local mirror rootfs
  mirror="$(sed -n 's/^URIs: *\(http[^ ]*debian\)\/*$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)"
  mirror="${DEBIAN_MIRROR:-${mirror:-http://deb.debian.org/debian}}"
  rootfs="$(mktemp -d /var/tmp/maie-base.XXXXXX)"
  echo "Building the stand-in base $STAND_IN from $mirror (debootstrap, about a minute)..." >&2
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$mirror" >/dev/null
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/man "$rootfs"/usr/share/info
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  tar -C "$rootfs" -c . | "$ENGINE" import --change 'CMD ["python3"]' - "$STAND_IN" >/dev/null
  rm -rf "$rootfs"
}

if ! have_image "$BASE_IMAGE"; then
  if ! timeout 120 "$ENGINE" pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
    if [[ "$BASE_IMAGE" != "$OFFICIAL" ]]; then
      echo "error: the base image $BASE_IMAGE is not here and cannot be pulled" >&2
      exit 2
    fi
    echo "$OFFICIAL cannot be pulled here (no registry): using the Debian-built stand-in $STAND_IN" >&2
    BASE_IMAGE="$STAND_IN"
    have_image "$STAND_IN" || build_stand_in
  fi
fi

# ---- the builds -------------------------------------------------------------------------------
SECRET=()
if [[ -n "${PIP_CERT:-}" && -s "${PIP_CERT}" ]]; then
  SECRET=(--secret "id=pip_cert,src=$PIP_CERT")
fi
# shellcheck disable=SC2206
EXTRA=(${BUILD_ARGS:-})

size_of() {
  "$ENGINE" image inspect --format '{{.Size}}' "$1"
}

declare -a REPORT
for image in "${IMAGES[@]}"; do
  name="${IMAGE_PREFIX}maie-$image:$TAG"
  case "$image" in
    api) args=(-f Dockerfile.api) ;;
    runner) args=(-f Dockerfile.runner --target runner) ;;
    runner-gpu) args=(-f Dockerfile.runner --target runner-gpu
                      --build-arg "CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES:-80;86;89;90}") ;;
  esac
  echo "== building $name (base $BASE_IMAGE, $ENGINE)" >&2
  start=$(date +%s)
  "$ENGINE" build "${FLAGS[@]}" "${args[@]}" "${SECRET[@]}" "${EXTRA[@]}" \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "VERSION=$VERSION" \
    --build-arg "REVISION=$REVISION" --build-arg "SOURCE=$SOURCE" \
    -t "$name" . >&2
  seconds=$(($(date +%s) - start))
  # The image this build replaced, now untagged; build-cache layers are kept.
  "$ENGINE" image prune -f --filter "label=org.opencontainers.image.title=maie-$image" >/dev/null 2>&1 || true
  bytes="$(size_of "$name")"
  REPORT+=("$(printf '%-40s %8s MB %6s s' "$name" "$((bytes / 1000000))" "$seconds")")
done

echo
echo "image                                        size   build (base $BASE_IMAGE)"
for line in "${REPORT[@]}"; do echo "$line"; done
