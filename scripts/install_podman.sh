#!/usr/bin/env bash
# Install podman, runc and debootstrap with apt-get when podman is missing (Debian/Ubuntu, as root).
#
#   bash scripts/install_podman.sh      # exit 0 when podman is (now) there, 1 when it cannot be had
#
# Used by scripts/build_images.sh and scripts/test.sh (the `images` tests). runc because podman's
# default crun stops with "cgroups in hybrid mode not supported" on some hosts; debootstrap builds the
# stand-in base image where no container registry can be reached (build_images.sh). Idempotent.
set -euo pipefail

if command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1; then
  exit 0
fi
if command -v podman >/dev/null 2>&1 && [[ "$(id -u)" != "0" ]]; then
  exit 0  # podman is there; the rest is optional and needs root
fi
if [[ "$(id -u)" != "0" ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "podman is not installed, and this is not a root shell with apt-get: install podman (and runc)" >&2
  exit 1
fi
echo "Installing podman, runc and debootstrap (apt-get)..." >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q podman runc debootstrap >/dev/null 2>&1; then
  apt-get update -q >/dev/null
  apt-get install -y -q podman runc debootstrap >/dev/null
fi
command -v podman >/dev/null
