#!/bin/sh
# Stands in for tests/check_realsw when configure did not find the
# development packages of the real software it tests: fails, saying which.
echo "check_realsw not built: install postgresql libpq-dev redis-server libhiredis-dev" \
     "libcurl4-openssl-dev libsqlite3-dev (see .ci/run) and re-run configure"
exit 1
