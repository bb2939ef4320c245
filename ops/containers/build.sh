#!/usr/bin/env bash
# Builds the images `make test-containers` runs, with podman, on a machine that reaches no container
# registry: the Debian base (debootstrap, when missing), the project image's dev and prod targets, and the
# PostgreSQL and Redis images of the dev profile. What is particular to this machine stays here, not in
# the Dockerfile: the base image, the build-time package mirror and the proxy's CA bundle (a build secret,
# never a layer), and the resource limits podman needs under this VM's hard limits.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${VLAAPI_IMAGE:=localhost/vlaapi}"
: "${BASE_IMAGE:=localhost/debian-base:bookworm}"
export BASE_IMAGE
ops/containers/base_image.sh

PODMAN=(podman --runtime runc)
LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
# Docker image format: the OCI format has no HEALTHCHECK, and podman drops it there.
args=(--format docker --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" "${LIMITS[@]}" --layers)
# pip's configuration on this machine (/etc/xdg/pip, PIP_* in the environment) names local package
# directories (file:// indexes, find-links): they are mounted read-only for the build, at the same paths.
pip_args=()
extra="$(pip3 config get global.extra-index-url 2>/dev/null || true)"
links="${PIP_FIND_LINKS:-$(pip3 config get global.find-links 2>/dev/null || true)}"
for url in $extra $links; do
  dir="${url#file://}"; dir="${dir%/simple}"
  [ -d "$dir" ] && pip_args+=(-v "$dir:$dir:ro")
done
[ -n "$extra" ] && pip_args+=(--build-arg "PIP_EXTRA_INDEX_URL=$extra")
[ -n "$links" ] && pip_args+=(--build-arg "PIP_FIND_LINKS=$links")
ca="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
[ -s "$ca" ] && pip_args+=(--secret "id=pip_ca,src=$ca")

# A fingerprint of everything a build reads, kept as a label: an image whose label matches is current, and
# is not built again (buildah's own cache check hashes the 6 GB virtual environment on every COPY --from).
fingerprint() {
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --exclude=__pycache__ -c "$@" | sha256sum | cut -c1-16
}
build() {  # build TAG FINGERPRINT ARGS...
  local tag=$1 fp=$2; shift 2
  if [ "$(podman image inspect --format '{{index .Labels "vlaapi.source"}}' "$tag" 2>/dev/null)" = "$fp" ]; then
    echo "$tag is current ($fp)"; return
  fi
  "${PODMAN[@]}" build "${args[@]}" --label "vlaapi.source=$fp" -t "$tag" "$@" .
}
app_fp="$(fingerprint Dockerfile .dockerignore Procfile celeryconfig.py setup.cfg pyproject.toml README.md \
  migrations safety workers web ops)"
svc_fp="$(fingerprint ops/containers/services.Dockerfile ops/containers/postgres-entrypoint.sh)"

t0=$(date +%s)
build "$VLAAPI_IMAGE:dev" "$app_fp" "${pip_args[@]}" --target dev -f Dockerfile
build "$VLAAPI_IMAGE:latest" "$app_fp" "${pip_args[@]}" --target prod -f Dockerfile
build localhost/vlaapi-postgres:15 "$svc_fp" --target postgres -f ops/containers/services.Dockerfile
build localhost/vlaapi-redis:7 "$svc_fp" --target redis -f ops/containers/services.Dockerfile
echo "images built in $(( $(date +%s) - t0 )) s"
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E 'vlaapi|debian-base'
