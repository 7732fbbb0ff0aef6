// A real Better Auth server for the integration tests: memory adapter, email-and-password
// sign-up and the jwt plugin, on 127.0.0.1:$PORT. Started by tests/common/better_auth.rs.
//
// Environment:
//   PORT                the port to listen on (0 picks a free one; the port is printed)
//   BETTER_AUTH_URL     the base URL it advertises; its origin is the tokens' iss and aud.
//                       Default http://127.0.0.1:$PORT. It may differ from where it listens,
//                       to issue tokens with a wrong iss/aud.
//   BETTER_AUTH_SECRET  32+ characters (a fixed test secret by default)
//   JWT_ALG             EdDSA (default), ES256, ES512, RS256 or PS256
//   STABLE_USER_IDS=1   a user's id (the tokens' sub) derives from the email, instead of being
//                       random, so a user signed up again after a restart keeps its sub
//   EXIT_ON_STDIN_CLOSE=1  exit when stdin closes: the test process that started it is gone
//
// Prints `ready <port>` on stdout once it listens; everything else goes to stderr. Every start
// has a fresh in-memory database, so a fresh signing key and kid. Exits on SIGTERM/SIGINT.

import { createHash } from "node:crypto";
import http from "node:http";
import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { toNodeHandler } from "better-auth/node";
import { jwt } from "better-auth/plugins/jwt";

const ALGORITHMS = ["EdDSA", "ES256", "ES512", "RS256", "PS256"];

function fail(message) {
  console.error(`better-auth fixture: ${message}`);
  process.exit(2);
}

const port = Number.parseInt(process.env.PORT ?? "0", 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`bad PORT ${process.env.PORT}`);
const alg = process.env.JWT_ALG || "EdDSA";
if (!ALGORITHMS.includes(alg)) fail(`JWT_ALG must be one of ${ALGORITHMS.join(", ")}, not ${alg}`);
const secret =
  process.env.BETTER_AUTH_SECRET || "better-auth-fixture-secret-0123456789abcdefghijklmnop";
if (secret.length < 32) fail("BETTER_AUTH_SECRET must have 32 characters or more");

const stableUserIds = process.env.STABLE_USER_IDS === "1";

// The memory adapter reads fail on a table that does not exist yet: create them all up front.
const db = { user: [], session: [], account: [], verification: [], jwks: [] };

function createAuth(baseURL) {
  return betterAuth({
    baseURL,
    secret,
    database: memoryAdapter(db),
    emailAndPassword: { enabled: true },
    plugins: [jwt({ jwks: { keyPairConfig: { alg } } })],
    databaseHooks: stableUserIds
      ? {
          user: {
            create: {
              // 32 characters of [0-9a-f], as long as Better Auth's own ids.
              before: async (user) => {
                const digest = createHash("sha256").update(user.email.toLowerCase()).digest("hex");
                return { data: { ...user, id: digest.slice(0, 32) } };
              },
            },
          },
        }
      : undefined,
    rateLimit: { enabled: false },
    telemetry: { enabled: false },
    logger: {
      level: "warn",
      // stdout carries only the ready line.
      log: (level, message, ...args) => console.error(`[better-auth ${level}]`, message, ...args),
    },
  });
}

const server = http.createServer();
server.on("error", (error) => fail(`cannot listen on 127.0.0.1:${port}: ${error.message}`));
server.listen(port, "127.0.0.1", () => {
  const actual = server.address().port;
  const auth = createAuth(process.env.BETTER_AUTH_URL || `http://127.0.0.1:${actual}`);
  server.on("request", toNodeHandler(auth));
  process.stdout.write(`ready ${actual}\n`);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
if (process.env.EXIT_ON_STDIN_CLOSE === "1") {
  process.stdin.on("end", shutdown);
  process.stdin.on("error", shutdown);
  process.stdin.resume();
}
