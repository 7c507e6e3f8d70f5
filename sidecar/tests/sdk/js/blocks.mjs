// The official JavaScript SDK's binding, configuration, lock and state-query
// calls against daprd, over HTTP and gRPC where the SDK offers them
// (configuration is gRPC-only in the SDK).
//
// Usage: node blocks.mjs DAPR_HTTP_PORT DAPR_GRPC_PORT CONFIG_KEY
// Prints "ok <check>" for each check that passed; exits non-zero otherwise.

import { CommunicationProtocolEnum, DaprClient, LogLevel } from "@dapr/dapr";

const [httpPort, grpcPort, configKey] = process.argv.slice(2);
const logger = { level: LogLevel.Error };
const clients = {
  http: new DaprClient({ daprHost: "127.0.0.1", daprPort: httpPort, logger }),
  grpc: new DaprClient({
    daprHost: "127.0.0.1",
    daprPort: grpcPort,
    communicationProtocol: CommunicationProtocolEnum.GRPC,
    logger,
  }),
};

function check(name, cond, detail = "") {
  if (!cond) {
    console.log(`FAIL ${name}: ${JSON.stringify(detail)}`);
    process.exit(1);
  }
  console.log(`ok ${name}`);
}

for (const [via, client] of Object.entries(clients)) {
  const file = `js-${via}-${process.pid}.json`;
  await client.binding.send("files", "create", { via }, { fileName: file });
  const got = await client.binding.send("files", "get", "", { fileName: file });
  // HTTP answers with the parsed body; gRPC with {data: bytes, metadata}.
  const text = got?.data instanceof Uint8Array ? new TextDecoder().decode(got.data) : JSON.stringify(got);
  check(`js ${via} binding send`, text.includes(via), got);

  const resource = `js-${via}-${process.pid}`;
  const taken = await client.lock.lock("lockstore", resource, "owner-a", 30);
  check(`js ${via} lock`, taken.success === true, taken);
  const refused = await client.lock.lock("lockstore", resource, "owner-b", 30);
  check(`js ${via} lock held`, refused.success === false, refused);
  const released = await client.lock.unlock("lockstore", resource, "owner-a");
  check(`js ${via} unlock`, released.status === 0, released);

  await client.state.save("statestore", [
    { key: `${via}-1`, value: { team: via, n: 2 } },
    { key: `${via}-2`, value: { team: via, n: 1 } },
    { key: `${via}-3`, value: { team: "other", n: 3 } },
  ]);
  const res = await client.state.query("statestore", {
    filter: { EQ: { team: via } },
    sort: [{ key: "n", order: "ASC" }],
    page: { limit: 10 },
  });
  const keys = (res.results || []).map((r) => r.key);
  check(`js ${via} state query`, JSON.stringify(keys) === JSON.stringify([`${via}-2`, `${via}-1`]), res);
}

const grpc = clients.grpc;
const cfg = await grpc.configuration.get("config", [configKey]);
check("js grpc configuration get", cfg.items[configKey]?.value === "v1", cfg);
const seen = [];
const sub = await grpc.configuration.subscribeWithKeys("config", [configKey], (c) => {
  seen.push(c.items[configKey]?.value);
});
await new Promise((r) => setTimeout(r, 300));
await grpc.binding.send("cache", "create", "v3||3", { key: configKey });
for (let i = 0; i < 100 && !seen.includes("v3"); i++) {
  await new Promise((r) => setTimeout(r, 50));
}
check("js grpc configuration subscribe", seen.includes("v3"), seen);
await sub.stop();
process.exit(0);
