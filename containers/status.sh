#!/usr/bin/env bash
# The container lab's health as it is now: runs each container's health check once and prints one
# line per service. Podman runs health checks on a timer through systemd; without systemd (WSL2,
# these machines, many containers-in-containers) nobody runs them, so `podman ps` shows "(starting)"
# forever. Running the check here also updates what `podman ps` shows.
#   containers/status.sh [PROJECT]     (default obslab; `make status` calls it)
set -uo pipefail
export CONTAINERS_CONF="${CONTAINERS_CONF:-$(dirname "$0")/containers.conf}"
project="${1:-obslab}"
command -v podman >/dev/null || exit 0
names=$(podman ps -a --filter "label=io.podman.compose.project=$project" --format '{{.Names}}' 2>/dev/null | sort)
if [ -z "$names" ]; then
    echo "container lab ($project): not running (start it with \`make up\`)"
    exit 0
fi
echo "container lab ($project): health checked now"
unhealthy=0
for name in $names; do
    state=$(podman inspect --format '{{.State.Status}}' "$name" 2>/dev/null)
    if [ "$state" != "running" ]; then
        printf '  %-28s %s\n' "$name" "$state (see \`podman logs $name\`)"
        unhealthy=1
        continue
    fi
    if ! podman inspect --format '{{.Config.Healthcheck}}' "$name" | grep -q '[A-Za-z]'; then
        printf '  %-28s %s\n' "$name" "running (no health check)"
        continue
    fi
    if timeout 120 podman healthcheck run "$name" >/dev/null 2>&1; then
        printf '  %-28s %s\n' "$name" "healthy"
    else
        # The reason is what the check printed last (containers/service.py health NAME says why).
        reason=$(podman inspect --format '{{range .State.Health.Log}}{{.Output}}{{"\n"}}{{end}}' "$name" 2>/dev/null \
                 | grep -v '^$' | tail -n 1)
        printf '  %-28s %s\n' "$name" "unhealthy: ${reason:-no output} (see \`podman logs $name\`)"
        unhealthy=1
    fi
done
exit $unhealthy
