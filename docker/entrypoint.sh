#!/bin/bash
# Entry point of the CardioMM Gadgetron image (run under /tini, which forwards signals).
# Activates Gadgetron's conda env, then runs the command: `gadgetron ...` by default, or any
# other command given (cardiomm-worker, cardiomm-replay, bash, ...). Arguments that start with
# '-' alone are passed to gadgetron, as in the official image (`docker run IMAGE --port 9002`).
set -eo pipefail

# shellcheck disable=SC1091
. /opt/conda/etc/profile.d/conda.sh
conda activate "${CARDIOMM_CONDA_ENV:-gadgetron}"

if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    exec gadgetron "$@"
fi
exec "$@"
