# Sourced by the scripts: creates .venv on first use (or when pyproject.toml
# changed) so that a fresh clone needs no set-up step of its own.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.pyproject.sha256"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    echo "bootstrapping $VENV ..." >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT[test]" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
    "$VENV/bin/python" -c "import aiohttp, loguru, psutil, tenacity, sdnotify, prometheus_client, pytest" \
        || { echo "bootstrap failed: dependencies did not install" >&2; exit 1; }
    echo "$want" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
