# Sourced by tests/run-all and tests/load/with-servers: starts the local servers the suites talk
# to, on free loopback ports, and stops them. The sourcing script sets $work (the log folder),
# $python (the .venv interpreter), say and fail, and calls stop_servers on exit.
pids=()
stop_servers() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}

# start NAME COMMAND...: runs COMMAND in the background, waits for its "READY <port>" line, and
# sets $port. A server that does not come up within 20 s fails the run with its log.
start() {
  local name=$1; shift
  local log=$work/$name.log
  # Made here, not by the redirection below: that one happens in the child, which may not have
  # run yet when the first poll reads the file.
  : > "$log"
  "$@" > "$log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 200); do
    port=$(sed -n 's/^READY \([0-9]*\)$/\1/p' "$log" | head -n 1)
    [ -n "$port" ] && { say "$name is up on 127.0.0.1:$port"; return 0; }
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  cat "$log" >&2
  fail "$name did not start"
}

# start_bridge_servers DYNAMODB_SERVER: Dynoxide, the fake amojo, the fake chat service and the
# fake Kommo (OAuth and REST), each with a fresh secret, exported under the names the suites read
# (TEST_DYNAMODB_ENDPOINT, FAKE_AMOJO_URL/SECRET, FAKE_CHAT_URL/SECRET, FAKE_KOMMO_URL/SECRET).
start_bridge_servers() {
  local amojo_secret chat_secret kommo_secret
  amojo_secret=$("$python" -c 'import secrets; print(secrets.token_hex(20))')
  chat_secret=whsec_$("$python" -c 'import base64, secrets; print(base64.b64encode(secrets.token_bytes(32)).decode())')
  start dynamodb "$1" --port 0
  export TEST_DYNAMODB_ENDPOINT=http://127.0.0.1:$port
  start fake-amojo "$python" tests/fakes/fake_amojo.py --port 0 --secret "$amojo_secret"
  export FAKE_AMOJO_URL=http://127.0.0.1:$port FAKE_AMOJO_SECRET=$amojo_secret
  start fake-chat "$python" tests/fakes/fake_chat_service.py --port 0 --secret "$chat_secret"
  export FAKE_CHAT_URL=http://127.0.0.1:$port FAKE_CHAT_SECRET=$chat_secret
  kommo_secret=$("$python" -c 'import secrets; print(secrets.token_hex(32))')
  start fake-kommo "$python" tests/fakes/fake_kommo.py --port 0 --secret "$kommo_secret"
  export FAKE_KOMMO_URL=http://127.0.0.1:$port FAKE_KOMMO_SECRET=$kommo_secret
}
