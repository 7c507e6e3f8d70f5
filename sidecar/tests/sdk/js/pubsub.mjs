// A DaprServer subscriber and DaprClient publishers (HTTP and gRPC) from the
// official JavaScript SDK, against one daprd.
//
// Usage: node pubsub.mjs APP_PORT DAPR_HTTP_PORT DAPR_GRPC_PORT
// Prints "ok <check>" for each check that passed; exits non-zero otherwise.

import { CommunicationProtocolEnum, DaprClient, DaprServer, LogLevel } from "@dapr/dapr";

const [appPort, httpPort, grpcPort] = process.argv.slice(2);
const logger = { level: LogLevel.Error };
const received = [];

const server = new DaprServer({
  serverHost: "127.0.0.1",
  serverPort: appPort,
  clientOptions: { daprHost: "127.0.0.1", daprPort: httpPort, logger },
  logger,
});
await server.pubsub.subscribe("pubsub", "orders", async (data) => {
  received.push(data);
});
await server.start();

const http = new DaprClient({ daprHost: "127.0.0.1", daprPort: httpPort, logger });
const grpc = new DaprClient({
  daprHost: "127.0.0.1",
  daprPort: grpcPort,
  communicationProtocol: CommunicationProtocolEnum.GRPC,
  logger,
});

// Subscriptions start once daprd has read /dapr/subscribe.
for (let i = 0; i < 200; i++) {
  const md = await http.metadata.get();
  if ((md.subscriptions || []).length > 0) break;
  await new Promise((r) => setTimeout(r, 50));
}

const viaHttp = await http.pubsub.publish("pubsub", "orders", { n: 1, via: "http" });
if (viaHttp.error) throw new Error(`HTTP publish failed: ${viaHttp.error}`);
console.log("ok js http publish");
const viaGrpc = await grpc.pubsub.publish("pubsub", "orders", { n: 2, via: "grpc" });
if (viaGrpc.error) throw new Error(`gRPC publish failed: ${viaGrpc.error}`);
console.log("ok js grpc publish");
const unknown = await http.pubsub.publish("nope", "orders", { n: 3 });
if (unknown.error) console.log("ok js unknown pubsub refused");

for (let i = 0; i < 200 && received.length < 2; i++) {
  await new Promise((r) => setTimeout(r, 50));
}
const got = received.map((d) => d.n).sort();
if (JSON.stringify(got) !== "[1,2]") throw new Error(`received ${JSON.stringify(received)}`);
console.log("ok js subscriber received");

await grpc.stop();
await http.stop();
await server.stop();
process.exit(0);
