#!/usr/bin/env bash
# `make test-gadgetron`, step 1: find a Gadgetron 4.x (with gadgetron_ismrmrd_client) and its MRD
# storage server, or build them from the shared sources when none is found.
#
#   GADGETRON_SRC  folder holding build.sh / build_storage_server.sh (default ../shared/gadgetron,
#                  relative to the repository root: CI's clone layout)
#   GADGETRON_BUILD=0  never build: use a Gadgetron that is there, or skip
#   GADGETRON_BUILD_TIMEOUT=S  build for at most S seconds, else skip with a message (.ci/run: the
#                  whole CI stays within its time limit on a busy machine)
#   GADGETRON_HOME / PATH / /opt/gadgetron-4.7.2 (the build script's prefix) are searched, in
#   that order, as tests/gadgetron_real/conftest.py does.
#
# Building takes about 30 minutes once per machine (the result stays in /opt/gadgetron-4.7.2 and
# /var/tmp/gadgetron-build, so later runs find it); the storage server about 10 s. Both scripts
# need root and Debian 12. Without a Gadgetron and without the scripts this prints why and exits
# 0: the tests then skip with that message.
set -euo pipefail
SRC=${GADGETRON_SRC:-../shared/gadgetron}
PREFIX=${GADGETRON_PREFIX:-/opt/gadgetron-4.7.2}
log() { echo "[test-gadgetron] $*"; }

usable() { [[ -x $1/gadgetron && -x $1/gadgetron_ismrmrd_client ]]; }

bin=""
if [[ -n ${GADGETRON_HOME:-} ]] && usable "$GADGETRON_HOME/bin"; then
  bin=$GADGETRON_HOME/bin
elif command -v gadgetron >/dev/null 2>&1 && usable "$(dirname "$(command -v gadgetron)")"; then
  bin=$(dirname "$(command -v gadgetron)")
elif usable "$PREFIX/bin"; then
  bin=$PREFIX/bin
fi

if [[ -z $bin ]]; then
  if [[ ${GADGETRON_BUILD:-1} == 0 ]]; then
    log "no Gadgetron (GADGETRON_HOME, PATH, $PREFIX) and GADGETRON_BUILD=0: the real-server tests will be skipped"
    exit 0
  elif [[ -f $SRC/build.sh ]]; then
    log "no Gadgetron found: building one with $SRC/build.sh into $PREFIX (about 30 min once per machine)"
    started=$(date +%s)
    if [[ -n ${GADGETRON_BUILD_TIMEOUT:-} ]]; then
      # CI: a bounded build; one that does not finish in time is reported and the tests skip (the
      # build resumes where it stopped on the next run of the same machine)
      if ! PREFIX=$PREFIX timeout "$GADGETRON_BUILD_TIMEOUT" bash "$SRC/build.sh"; then
        log "the Gadgetron build did not finish within GADGETRON_BUILD_TIMEOUT=${GADGETRON_BUILD_TIMEOUT} s: the real-server tests will be skipped"
        exit 0
      fi
    else
      PREFIX=$PREFIX bash "$SRC/build.sh"
    fi
    log "Gadgetron built in $(( $(date +%s) - started )) s"
    bin=$PREFIX/bin
  else
    log "no Gadgetron (GADGETRON_HOME, PATH, $PREFIX) and no $SRC/build.sh: the real-server tests will be skipped"
    exit 0
  fi
fi
log "Gadgetron: $bin/gadgetron"

if [[ ! -x $bin/mrd-storage-server ]] && ! command -v mrd-storage-server >/dev/null 2>&1; then
  if [[ -f $SRC/build_storage_server.sh ]]; then  # seconds (after its apt step): built even with GADGETRON_BUILD=0
    log "no mrd-storage-server: building it with $SRC/build_storage_server.sh"
    PREFIX=$(dirname "$bin") bash "$SRC/build_storage_server.sh"
  else
    log "no mrd-storage-server and no $SRC/build_storage_server.sh: the real-server tests will be skipped"
  fi
fi
