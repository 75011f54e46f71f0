/**
 * Subscribes to one public query with the official Convex client and prints
 * one JSON line per result: `{"at": <ms since the epoch, sub-ms>, "value": …}`.
 * The token comes from an issuer's demo `/token?sub=` endpoint, fetched again
 * whenever the client asks for a fresh one.
 *
 *   tsx tools/subscribe.ts --url <deployment> --token-url <issuer>/token --user <id> \
 *       --query runs:list [--args '{"limit":200}']
 *
 * Prints `{"auth": true|false}` when the server accepts or refuses the token.
 */
import { ConvexClient } from "convex/browser";
import { makeFunctionReference } from "convex/server";

function flag(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const url = flag("url");
const tokenUrl = flag("token-url");
const user = flag("user");
const query = flag("query");
if (!url || !tokenUrl || !user || !query) {
  console.error(
    "usage: subscribe --url <deployment> --token-url <issuer>/token --user <id> --query <module:function> [--args JSON]",
  );
  process.exit(2);
}
const args = JSON.parse(flag("args") ?? "{}");
const now = () => performance.timeOrigin + performance.now();
const quiet = () => {};
const client = new ConvexClient(url, {
  logger: { logVerbose: quiet, log: quiet, warn: quiet, error: (...a: unknown[]) => console.error(...a) },
});
client.setAuth(
  async () => {
    // No token (issuer gone or refusing) = no identity: the client goes on unauthenticated.
    const res = await fetch(`${tokenUrl}?sub=${encodeURIComponent(user)}`).catch(() => null);
    return res?.ok ? ((await res.json()) as { token: string }).token : null;
  },
  (ok) => console.log(JSON.stringify({ auth: ok })),
);
client.onUpdate(makeFunctionReference<"query">(query), args, (value) =>
  console.log(JSON.stringify({ at: now(), value })),
);
// Exit with the process that started us.
const parent = process.ppid;
setInterval(() => {
  try {
    process.kill(parent, 0);
  } catch {
    process.exit(0);
  }
}, 500).unref();
for (const sig of ["SIGTERM", "SIGINT"] as const) process.on(sig, () => client.close().then(() => process.exit(0)));
