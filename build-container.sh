#!/usr/bin/env bash
# Build the HUD image: ./build-container.sh [version] [--push | --no-push]
#
#   version            image tag to build (default: latest); a version other than
#                      "latest" is also tagged IMAGE:latest
#   --push / --no-push push the built tags, or don't, without asking
#                      (with neither, ask - but only when run in a terminal)
#
# Environment:
#   IMAGE              image name without tag (default: quay.io/cnuland/zelda-hud)
#   CONTAINER_ENGINE   podman or docker (default: podman if installed, else docker)
#   PLATFORM           build for another platform, e.g. linux/amd64 on an arm64 Mac
#
# Works from any directory: the build context is the folder this script is in.
# Uses shell builtins only, besides the container engine.
set -euo pipefail

readonly DEFAULT_IMAGE="quay.io/cnuland/zelda-hud"

usage() {
    cat <<EOF
Usage: build-container.sh [version] [--push | --no-push]

Builds \${IMAGE:-$DEFAULT_IMAGE}:version (version defaults to latest) with podman,
or docker when podman is not installed (CONTAINER_ENGINE overrides), then offers
to push it. Environment: IMAGE, CONTAINER_ENGINE, PLATFORM.
EOF
}

die() {
    printf 'build-container.sh: %s\n' "$*" >&2
    exit 1
}

version=""
push=""   # "yes", "no", or "" (ask when interactive)
for arg in "$@"; do
    case "$arg" in
        --push) push="yes" ;;
        --no-push) push="no" ;;
        -h | --help) usage; exit 0 ;;
        -*) usage >&2; printf '\nbuild-container.sh: unknown option: %s\n' "$arg" >&2; exit 2 ;;
        *)
            [[ -z "$version" ]] || { usage >&2; exit 2; }
            version="$arg"
            ;;
    esac
done
version="${version:-latest}"
image="${IMAGE:-$DEFAULT_IMAGE}"

# A tag is at most 128 of [A-Za-z0-9_.-], not starting with . or -.
if [[ ! "$version" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]; then
    die "invalid version '$version': use letters, digits, '_', '.' and '-' (e.g. v1.1.0)"
fi

if [[ -n "${CONTAINER_ENGINE:-}" ]]; then
    engine="$CONTAINER_ENGINE"
    command -v "$engine" >/dev/null 2>&1 \
        || die "CONTAINER_ENGINE=$engine, but '$engine' is not installed or not on PATH"
elif command -v podman >/dev/null 2>&1; then
    engine="podman"
elif command -v docker >/dev/null 2>&1; then
    engine="docker"
else
    die "no container engine found: install podman (https://podman.io) or docker, or set CONTAINER_ENGINE"
fi

# The folder holding this script (and the Containerfile), as an absolute path.
script_dir="${BASH_SOURCE[0]%/*}"
[[ "$script_dir" != "${BASH_SOURCE[0]}" ]] || script_dir="."
context="$(cd "$script_dir" && pwd)"
[[ -f "$context/Containerfile" ]] || die "no Containerfile in $context"

build_args=(build -f "$context/Containerfile" -t "$image:$version")
if [[ "${engine##*/}" == "podman" ]]; then
    # The OCI format has no HEALTHCHECK; the docker format keeps it.
    build_args+=(--format docker)
fi
if [[ -n "${PLATFORM:-}" ]]; then
    build_args+=(--platform "$PLATFORM")
fi

tags=("$image:$version")
printf 'Building %s with %s from %s\n' "$image:$version" "$engine" "$context"
"$engine" "${build_args[@]}" "$context"
if [[ "$version" != "latest" ]]; then
    "$engine" tag "$image:$version" "$image:latest"
    tags+=("$image:latest")
fi

printf '\nBuilt:\n'
"$engine" images --format '{{.Repository}}:{{.Tag}}  {{.ID}}  {{.Size}}' "$image:$version"

if [[ -z "$push" ]]; then
    if [[ -t 0 && -t 1 ]]; then
        read -r -p "Push ${tags[*]}? [y/N] " answer || answer=""
        case "$answer" in
            [yY] | [yY][eE][sS]) push="yes" ;;
            *) push="no" ;;
        esac
    else
        push="no"
        printf 'Not pushing (no terminal to ask in): run again with --push to push.\n'
    fi
fi

if [[ "$push" == "yes" ]]; then
    for tag in "${tags[@]}"; do
        printf 'Pushing %s\n' "$tag"
        "$engine" push "$tag" \
            || die "push of $tag failed: log in first ($engine login ${image%%/*}) and check you may write to $image"
    done
fi

printf '\nRun it: %s run --rm -p 8086:8086 %s\n' "$engine" "$image:$version"
