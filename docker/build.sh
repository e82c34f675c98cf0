#!/usr/bin/env bash
# Build (and with --push, push) the GPU and CPU images with the versions in docker/versions.env.
# Tags: $IMAGE_REPO:<mixsweep>-ray<ray>-py<XY>-<cuda tag> and ...-cpu, the tags cluster/*.yaml use.
#   docker/build.sh            # build both, from the repository root as context
#   docker/build.sh --push     # build, then push both
#   docker/build.sh --tags     # only print the two tags
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
set -a
# shellcheck source=versions.env
. "$root/docker/versions.env"
set +a
python_tag="py${PYTHON_VERSION//./}"
base="$IMAGE_REPO:$MIXSWEEP_VERSION-ray$RAY_VERSION-$python_tag"
gpu_tag="$base-$CUDA_TAG"
cpu_tag="$base-cpu"

if [ "${1:-}" = "--tags" ]; then
    printf '%s\n%s\n' "$gpu_tag" "$cpu_tag"
    exit 0
fi

common=(--build-arg "RAY_VERSION=$RAY_VERSION" --build-arg "PYTHON_TAG=$python_tag"
        --build-arg "PYTHON_VERSION=$PYTHON_VERSION" --build-arg "TORCH_VERSION=$TORCH_VERSION")
docker build -f "$root/docker/Dockerfile.gpu" "${common[@]}" --build-arg "CUDA_TAG=$CUDA_TAG" -t "$gpu_tag" "$root"
docker build -f "$root/docker/Dockerfile.cpu" "${common[@]}" --build-arg "TORCH_CPU_INDEX=$TORCH_CPU_INDEX" -t "$cpu_tag" "$root"
if [ "${1:-}" = "--push" ]; then
    docker push "$gpu_tag"
    docker push "$cpu_tag"
fi
