#!/bin/sh
# Install the console's pinned browser libraries (package-lock.json) and copy the
# files the page loads into static/vendor/ (git-ignored). Run by `make setup`;
# idempotent, and quick when the lock file has not changed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
stamp=node_modules/.console-stamp
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
    npm ci --no-audit --no-fund --loglevel=error
    cp package-lock.json "$stamp"
fi
vendor=static/vendor
mkdir -p "$vendor"
for f in \
    node_modules/tus-js-client/dist/tus.min.js \
    node_modules/hls.js/dist/hls.min.js \
    node_modules/uplot/dist/uPlot.iife.min.js \
    node_modules/uplot/dist/uPlot.min.css
do
    cp "$f" "$vendor/"
done
echo "console: vendor files in $here/$vendor"
