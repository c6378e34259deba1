#!/bin/sh
# A persona signs up at the sandbox's example app from a shell script, through `run`:
#
#   env_file=$(mktemp)   # the sandbox's settings, or export your real provider credentials instead
#   python -m taos_persona.sandbox --print-env > "$env_file" & sandbox_pid=$!
#   until [ -s "$env_file" ]; do sleep 0.1; done; eval "$(cat "$env_file")"
#   python -m taos_persona run --persona shell_sam -- sh examples/persona.sh
#   kill "$sandbox_pid"; rm -f "$env_file"
#
# `run` holds the persona while this script runs and releases the mailbox and the number
# when it ends, however it ends (a failed step, Ctrl-C, kill). Needs curl.
set -eu
PY=${TAOS_PERSONA_PYTHON:-python3}   # `run` exports the interpreter it runs on
APP=${EXAMPLE_APP_URL:-$TAOS_PERSONA_SANDBOX/example_app}

field() {  # field NAME: read one field of the JSON object on stdin
    "$PY" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

address=$("$PY" -m taos_persona acquire email | field address)
number=$("$PY" -m taos_persona acquire sms | field number)
echo "acquired $address and $number"
if [ -n "${HOLD_MARKER:-}" ]; then   # for the crash test: hold here until killed
    echo $$ > "$HOLD_MARKER"
    while :; do sleep 1; done
fi

curl -fsS -H 'Content-Type: application/json' \
    -d "{\"email\": \"$address\", \"phone\": \"$number\"}" "$APP/signup" > /dev/null
link=$("$PY" -m taos_persona wait-message "$address" --subject Verify --timeout 30 | field link)
curl -fsS "$link" > /dev/null                  # follow the emailed link, as a person would
code=$("$PY" -m taos_persona wait-code "$number" --timeout 30 | field code)
curl -fsS -H 'Content-Type: application/json' \
    -d "{\"phone\": \"$number\", \"code\": \"$code\"}" "$APP/verify" > /dev/null
echo "signed up $address with phone $number"
