#!/usr/bin/env bash
# Build the three images from the repository root and push them to REGISTRY, with
# whichever of docker (with a reachable engine), podman or buildah works here; then print
# the chart values that point the operator at them.
#
#   REGISTRY=registry.example/ml [TAG=0.1.0] [PLATFORM=linux/amd64] images/build.sh
#   make images REGISTRY=registry.example/ml [TAG=...]
#
# TAG defaults to the project version (pyproject.toml), the chart's appVersion. Log in to
# the registry first (docker/podman/buildah login). Only bash builtins besides the
# builder: nothing else needs to be installed.
set -euo pipefail

IMAGES=(operator spark trainer)
ROOT=$(cd "${BASH_SOURCE[0]%/*}/.." && pwd)

fail() {
    echo "make images: $*" >&2
    exit 1
}

project_version() {
    local line in_project=0
    while IFS= read -r line; do
        case "$line" in
            "[project]") in_project=1 ;;
            "["*) in_project=0 ;;
            *)
                if ((in_project)) && [[ $line =~ ^version[[:space:]]*=[[:space:]]*\"([^\"]+)\" ]]; then
                    echo "${BASH_REMATCH[1]}"
                    return
                fi
                ;;
        esac
    done <"$ROOT/pyproject.toml"
    fail "no [project] version in $ROOT/pyproject.toml; set TAG"
}

registry=${REGISTRY:-}
registry=${registry%/}
[[ -n $registry ]] || fail "REGISTRY is required, e.g. make images REGISTRY=registry.example/ml (images are pushed as \$REGISTRY/lth-{operator,spark,trainer}:\$TAG)"
[[ $registry =~ ^[a-z0-9][a-z0-9._:/-]*$ ]] || fail "REGISTRY=$registry is not a registry and path (lower case, e.g. registry.example:5000/ml)"
tag=${TAG:-$(project_version)}
[[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || fail "TAG=$tag is not a valid image tag"

# The first builder that works: a docker CLI counts only when it reaches an engine.
builder=""
missing=()
for candidate in docker podman buildah; do
    if ! command -v "$candidate" >/dev/null 2>&1; then
        missing+=("$candidate: not installed")
    elif ! "$candidate" info >/dev/null 2>&1; then
        if [[ $candidate == docker ]]; then
            missing+=("docker: installed, but \`docker info\` cannot reach an engine")
        else
            missing+=("$candidate: installed, but \`$candidate info\` fails")
        fi
    else
        builder=$candidate
        break
    fi
done
if [[ -z $builder ]]; then
    summary=$(IFS=';'; echo "${missing[*]}")
    fail "no image builder works here (${summary//;/; }): install podman or buildah, or start a Docker engine"
fi

platform=()
[[ -z ${PLATFORM:-} ]] || platform=(--platform "$PLATFORM")

cd "$ROOT"
echo "building with $builder: $registry/lth-{$(IFS=,; echo "${IMAGES[*]}")}:$tag"
for image in "${IMAGES[@]}"; do
    ref="$registry/lth-$image:$tag"
    echo "--- $ref"
    # `build` is docker's, podman's and buildah's (1.23 and later) name for the same thing.
    "$builder" build "${platform[@]}" -f "images/$image/Dockerfile" -t "$ref" . ||
        fail "$builder could not build $ref (images/$image/Dockerfile)"
    "$builder" push "$ref" || fail "$builder could not push $ref (logged in to $registry?)"
done

printf '%s\n' "" "Pushed. Install the operator with these images:" "" \
    "  helm install lth charts/lth-operator -n lth-system --create-namespace \\" \
    "    --set image.repository=$registry/lth-operator \\" \
    "    --set image.tag=$tag \\" \
    "    --set workloads.trainerImage=$registry/lth-trainer:$tag \\" \
    "    --set workloads.sparkImage=$registry/lth-spark:$tag"
