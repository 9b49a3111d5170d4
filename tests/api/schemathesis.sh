#!/usr/bin/env bash
# Property-based API testing: schemathesis generates requests from openapi.json (valid and
# invalid ones) against a live callrelay with valid credentials, and checks that no answer is
# a 5xx and every answer matches the document.
#
#   tests/api/schemathesis.sh                     # short run (CI)
#   MAX_EXAMPLES=1000 tests/api/schemathesis.sh   # release check: many more cases per operation
#
# Needs Python 3 (installs schemathesis into .venv-schemathesis) and a built callrelay.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
max_examples=${MAX_EXAMPLES:-40}
seed=${SEED:-$RANDOM}
venv=${SCHEMATHESIS_VENV:-$root/.venv-schemathesis}
version=4.32.5

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$version"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$version"
fi
cargo build --locked -q
bin="$root/target/debug/callrelay"

work=$(mktemp -d)
# Push apps, so that binding registrations succeed: a throwaway APNs key and the tests' FCM
# key (neither is ever used to reach Apple or Google here).
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/AuthKey.p8" 2>/dev/null
python3 - "$root/tests/fixtures/fcm/test-service-account-key.pem" > "$work/firebase.json" <<'PY'
import json, sys
print(json.dumps({
    "type": "service_account", "project_id": "schemathesis",
    "private_key": open(sys.argv[1]).read(),
    "client_email": "callrelay@schemathesis.iam.gserviceaccount.com",
    "token_uri": "https://127.0.0.1:9/token",
}))
PY
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
admin_port=$(free_port)
cat > "$work/callrelay.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$admin_port"
public_url = "http://127.0.0.1:$port"

# JSON lines, so that the check for ERROR lines at the end can find them.
[log]
format = "json"

# Signed like Twilio for most requests; this account takes HTTP Basic instead, so that
# generated webhook bodies (which nobody can sign in advance) reach the relay's logic.
[[accounts]]
sid = "AC0123456789abcdef0123456789abcdef"
auth_token = "schemathesis-auth-token"
api_keys = [{ sid = "SK0123456789abcdef0123456789abcdef", secret = "schemathesis-api-key-secret" }]

[[accounts]]
sid = "ACfedcba9876543210fedcba9876543210"
require_signature = false
webhook_username = "twilio"
webhook_password = "schemathesis-basic-password"

[admin]
api_keys = ["schemathesis-admin-key-0123456789"]

# Generous limits, so that the generated requests reach the API's logic rather than the limiter.
[limits]
binding_requests_per_minute = 0
max_bindings_per_identity = 10000

[[apps]]
name = "ios"
channel = "apns"
topic = "com.example.voice"
team_id = "TEAM123456"
key_id = "KEY1234567"
key_file = "$work/AuthKey.p8"

[[apps]]
name = "android"
channel = "fcm"
service_account_file = "$work/firebase.json"
TOML
"$bin" serve --config "$work/callrelay.toml" > "$work/callrelay.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$admin_port/readyz" >/dev/null && break
  sleep 0.1
done
base="http://127.0.0.1:$port"
token=$("$bin" --config "$work/callrelay.toml" dev token --identity bob)

common=(--checks all --max-examples "$max_examples" --seed "$seed" --workers 1
        --phases examples,coverage,fuzzing --request-timeout 10 --warnings off --output-truncate true
        --exclude-checks positive_data_acceptance,use_after_free,ensure_resource_availability)
status=0
echo "== bindings API as an access-token holder (seed $seed, $max_examples examples per operation)"
"$venv/bin/schemathesis" --config-file "$root/tests/api/schemathesis.toml" run "$base/openapi.json" "${common[@]}" \
  --include-path-regex '^/v1/bindings' -H "Authorization: Bearer $token" || status=1
echo "== Twilio's webhooks (call notifications, status callbacks, Event Streams) with HTTP Basic credentials"
"$venv/bin/schemathesis" --config-file "$root/tests/api/schemathesis.toml" run "$base/openapi.json" "${common[@]}" \
  --include-path-regex '^/v1/twilio/' --auth "twilio:schemathesis-basic-password" || status=1
echo "== event forwarding targets as an admin"
"$venv/bin/schemathesis" --config-file "$root/tests/api/schemathesis.toml" run "$base/openapi.json" "${common[@]}" \
  --include-path-regex '^/v1/events/targets' -H "Authorization: Bearer schemathesis-admin-key-0123456789" || status=1
echo "== call traces and room ledgers as an admin, then call traces as an access-token holder"
"$venv/bin/schemathesis" --config-file "$root/tests/api/schemathesis.toml" run "$base/openapi.json" "${common[@]}" \
  --include-path-regex '^/v1/(calls|rooms)' -H "Authorization: Bearer schemathesis-admin-key-0123456789" || status=1
"$venv/bin/schemathesis" --config-file "$root/tests/api/schemathesis.toml" run "$base/openapi.json" "${common[@]}" \
  --include-path-regex '^/v1/calls' -H "Authorization: Bearer $token" || status=1
echo "== WebSocket upgrade endpoint and the document itself"
"$venv/bin/schemathesis" --config-file "$root/tests/api/schemathesis.toml" run "$base/openapi.json" "${common[@]}" \
  --include-path /v1/ws --include-path /openapi.json -H "Authorization: Bearer $token" || status=1
if grep -q '"level":"ERROR"\|panicked' "$work/callrelay.log"; then
  echo "callrelay logged errors or panicked:"; grep '"level":"ERROR"\|panicked' "$work/callrelay.log" | head -20
  status=1
fi
exit $status
