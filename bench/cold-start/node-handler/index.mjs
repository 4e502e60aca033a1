// The handler an integrator would otherwise write on Node.js 20: the AWS SDK v3 DynamoDB client
// is created once at module init (the usual pattern, so warm invocations reuse it), and the
// handler answers like the hello world. It never calls DynamoDB: the benchmark measures init.
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";

// eslint-disable-next-line no-unused-vars -- created for its init cost, as a real handler would
const dynamodb = new DynamoDBClient({});

export const handler = async (_event) => ({
  statusCode: 200,
  headers: { "content-type": "text/plain" },
  body: "hello",
});
