#!/usr/bin/env bash
# The project's test command: installs what the tests need (scripts/setup.sh)
# and runs every test. Backends named in REQUIRE_BACKENDS (e.g. `cpu`) must be
# available; others are skipped with a printed reason.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --release -p host "$@"
