#!/usr/bin/env bash
# Slurm:  GPUS=4 bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG [train.py args]
set -x
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
GPUS=${GPUS:-1}
GPUS_PER_NODE=${GPUS_PER_NODE:-$(( GPUS < 8 ? GPUS : 8 ))}  # one node up to 8 GPUs
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
srun -p "${PARTITION}" --job-name="${JOB_NAME}" --gres=gpu:"${GPUS_PER_NODE}" \
    --ntasks="${GPUS}" --ntasks-per-node="${GPUS_PER_NODE}" \
    --cpus-per-task="${CPUS_PER_TASK}" --kill-on-bad-exit=1 ${SRUN_ARGS} \
    python -u tools/train.py "${CONFIG}" --launcher="slurm" "${@:4}"
