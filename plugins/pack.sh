#!/bin/sh
# Packs a plugin folder with the SDK it needs into a bundle comet installs:
#   plugins/pack.sh plugins/examples/counter [out.tar.gz]
# (POST it to /api/v1/plugins.install, or drop it in COMET_PLUGIN_DIR.)
set -eu
src=${1:?usage: pack.sh <plugin folder> [bundle.tar.gz]}
here=$(cd "$(dirname "$0")" && pwd)
id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$src/plugin.json")
out=${2:-$id.tar.gz}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -R "$src" "$work/$id"
cp "$here/sdk/python/comet_plugin.py" "$here/sdk/node/comet-plugin.js" "$work/$id/"
rm -rf "$work/$id/__pycache__"
tar -C "$work" -czf "$out" "$id"
echo "$out"
