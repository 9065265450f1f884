#!/usr/bin/env bash
# Render an audit HTML report in headless Chromium and save a PNG screenshot, to check
# that the report reads well in a real browser (inline CSS + SVG, no network).
#
#   scripts/render_audit_screenshot.sh REPORT.html OUT.png [WIDTHxHEIGHT]
#
# Needs the Debian package `chromium` (apt-get install -y chromium). The browser runs
# with a throwaway profile and every background network feature off, so rendering
# never reaches out; the page itself loads nothing external.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 REPORT.html OUT.png [WIDTHxHEIGHT]" >&2
  exit 2
fi
html=$(realpath "$1")
out=$(realpath -m "$2")
size=${3:-1280x2400}
[[ -f "$html" ]] || { echo "error: $1: no such file" >&2; exit 2; }
browser=$(command -v chromium || command -v chromium-browser || true)
[[ -n "$browser" ]] || { echo "error: chromium not found (apt-get install -y chromium)" >&2; exit 2; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run --hide-scrollbars \
  --user-data-dir="$profile" --screenshot="$out" --window-size="${size/x/,}" \
  "file://$html" >/dev/null 2>&1
[[ -s "$out" ]] || { echo "error: chromium wrote no screenshot to $out" >&2; exit 1; }
echo "$out"
