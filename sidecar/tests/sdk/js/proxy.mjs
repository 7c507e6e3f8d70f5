// The official JavaScript SDK's gRPC proxy helper (`DaprClient.proxy.create`,
// shipped by @dapr/dapr up to 3.6 with @grpc/grpc-js) calling a user's own
// Echo service through daprd: unary, server streaming, and a status error.
//
// Usage: APP_ID=<target app> node proxy.mjs ECHO_PROTO DAPR_GRPC_PORT
// Prints "ok <check>" for each check that passed; exits non-zero otherwise.

import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { CommunicationProtocolEnum, DaprClient, LogLevel } = require("@dapr/dapr-grpcjs");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");

const [protoPath, grpcPort] = process.argv.slice(2);
const definition = loader.loadSync(protoPath, { keepCase: false, longs: Number });
const { Echo } = grpc.loadPackageDefinition(definition).daprs.test.v1;

const client = new DaprClient({
  daprHost: "127.0.0.1",
  daprPort: grpcPort,
  communicationProtocol: CommunicationProtocolEnum.GRPC,
  logger: { level: LogLevel.Error },
});
const echo = await client.proxy.create(Echo);

const fail = (what) => {
  console.error(`FAILED ${what}`);
  process.exit(1);
};

const unary = (msg) =>
  new Promise((resolve, reject) => echo.unary(msg, (err, res) => (err ? reject(err) : resolve(res))));

// The app sees the call addressed to it through the sidecars.
const reply = await unary({ text: "hello", count: 1 });
if (!reply.text.startsWith("hello|") || !reply.text.includes(`callee=${process.env.APP_ID}`)) {
  fail(`unary answered ${JSON.stringify(reply)}`);
}
console.log("ok unary");

const streamed = await new Promise((resolve, reject) => {
  const got = [];
  const call = echo.serverStream({ text: "", count: 5 });
  call.on("data", (m) => got.push(m.count));
  call.on("error", reject);
  call.on("end", () => resolve(got));
});
if (streamed.length !== 5 || streamed[4] !== 4) fail(`server stream gave ${JSON.stringify(streamed)}`);
console.log("ok server stream");

try {
  await unary({ text: "fail" });
  fail("an error status came back as success");
} catch (e) {
  if (e.code !== grpc.status.FAILED_PRECONDITION || e.details !== "the app refused") {
    fail(`status ${e.code}: ${e.details}`);
  }
}
console.log("ok status");
process.exit(0);
