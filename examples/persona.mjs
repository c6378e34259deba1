// A persona signs up at the sandbox's example app from plain Node (20+, no npm package), through `run`:
//
//   env_file=$(mktemp)
//   python -m taos_persona.sandbox --print-env > "$env_file" & sandbox_pid=$!
//   until [ -s "$env_file" ]; do sleep 0.1; done; eval "$(cat "$env_file")"
//   python -m taos_persona run --persona node_nora -- node examples/persona.mjs
//   kill "$sandbox_pid"; rm -f "$env_file"
//
// `run` holds the persona for this script's life and releases everything when it ends.
// The script speaks to it over the Unix socket named by TAOS_PERSONA_SOCKET: one JSON
// request per line, one JSON answer per line ({"ok": true, "value": ...} or {"ok": false, "error"}).
import net from "node:net";

/** Send one request to the persona holder; resolve with its value, reject with its error. */
function persona(request) {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(process.env.TAOS_PERSONA_SOCKET);
    let buffer = "";
    socket.on("connect", () => socket.write(JSON.stringify(request) + "\n"));
    socket.on("data", (chunk) => {
      buffer += chunk;
      if (!buffer.endsWith("\n")) return;
      socket.end();
      const answer = JSON.parse(buffer);
      answer.ok ? resolve(answer.value) : reject(new Error(answer.error));
    });
    socket.on("error", reject);
  });
}

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${url} answered ${response.status}: ${await response.text()}`);
  return response.json();
}

async function main() {
  if (!process.env.TAOS_PERSONA_SOCKET) {
    throw new Error("run me inside: python -m taos_persona run -- node examples/persona.mjs");
  }
  const app = process.env.EXAMPLE_APP_URL || `${process.env.TAOS_PERSONA_SANDBOX}/example_app`;
  const email = await persona({ op: "acquire", backend: "email", options: {} });
  const phone = await persona({ op: "acquire", backend: "sms", options: {} });
  console.log(`acquired ${email.address} and ${phone.number}`);

  await post(`${app}/signup`, { email: email.address, phone: phone.number });
  const message = await persona({ op: "wait_message", address: email.address, subject: "Verify", timeout: 30 });
  const verified = await fetch(message.link);          // follow the emailed link
  if (!verified.ok) throw new Error(`the link answered ${verified.status}`);
  const sms = await persona({ op: "wait_code", number: phone.number, timeout: 30 });
  await post(`${app}/verify`, { phone: phone.number, code: sms.code });
  console.log(`signed up ${email.address} with phone ${phone.number}`);
}

main().catch((error) => {
  console.error(`persona.mjs: ${error.message}`);
  process.exit(1);
});
