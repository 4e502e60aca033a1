// A minimal Lambda Runtime API client, standing in for the Node.js runtime's interface client
// (not available offline): load the handler module (the init phase), then loop on
// GET /next → handler → POST /response (or /error). It uses node:http with a keep-alive agent
// rather than fetch, so the figure does not include loading undici: the comparison errs in
// Node's favour, never against it.
import http from "node:http";
import path from "node:path";
import { pathToFileURL } from "node:url";

const API = process.env.AWS_LAMBDA_RUNTIME_API;
const PREFIX = "/2018-06-01/runtime";
const [host, port] = API.split(":");
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function call(method, urlPath, body) {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers = payload ? { "content-type": "application/json", "content-length": payload.length } : {};
    const request = http.request({ host, port: Number(port), method, path: PREFIX + urlPath, agent, headers }, (response) => {
      const chunks = [];
      response.on("data", (chunk) => chunks.push(chunk));
      response.on("end", () =>
        resolve({ status: response.statusCode, headers: response.headers, body: Buffer.concat(chunks).toString("utf8") }),
      );
      response.on("error", reject);
    });
    request.on("error", reject);
    request.end(payload);
  });
}

function errorBody(error) {
  return { errorType: error?.name ?? "Error", errorMessage: String(error?.message ?? error) };
}

// _HANDLER is "file.export" as in Lambda; the file is an ES module beside this one by default.
async function loadHandler() {
  const [file, exported] = (process.env._HANDLER ?? "index.handler").split(".");
  const root = process.env.LAMBDA_TASK_ROOT ?? path.dirname(new URL(import.meta.url).pathname);
  const module = await import(pathToFileURL(path.join(root, `${file}.mjs`)).href);
  if (typeof module[exported] !== "function") throw new TypeError(`${file}.${exported} is not a function`);
  return module[exported];
}

let handler;
try {
  handler = await loadHandler();
} catch (error) {
  await call("POST", "/init/error", errorBody(error));
  process.exit(1);
}

for (;;) {
  const next = await call("GET", "/invocation/next");
  const id = next.headers["lambda-runtime-aws-request-id"];
  const context = {
    awsRequestId: id,
    invokedFunctionArn: next.headers["lambda-runtime-invoked-function-arn"],
    getRemainingTimeInMillis: () => Number(next.headers["lambda-runtime-deadline-ms"]) - Date.now(),
  };
  try {
    const result = await handler(JSON.parse(next.body), context);
    await call("POST", `/invocation/${id}/response`, result);
  } catch (error) {
    await call("POST", `/invocation/${id}/error`, errorBody(error));
  }
}
