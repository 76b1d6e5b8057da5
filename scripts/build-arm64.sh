#!/usr/bin/env bash
# Build the Raspberry Pi / industrial ARM gateway release (linux-arm64) on an x86_64
# machine: release/edge-agent-<version>-linux-arm64.tar.gz and edge-agent_<version>_arm64.deb.
# Needs Debian's cross toolchain: apt-get install gcc-aarch64-linux-gnu g++-aarch64-linux-gnu
# All the work is in build-release.sh (which also builds amd64); see its header.
exec "$(dirname "${BASH_SOURCE[0]}")/build-release.sh" arm64 "$@"
