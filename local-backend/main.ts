/**
 * `npm run local-backend -- --port <port|0> --admin-key <key> [--host <addr>]`:
 * starts the backend, prints `local convex backend listening on <url>`, and
 * exits on SIGTERM/SIGINT or when the process that launched it dies.
 * Bearer tokens are verified against convex/auth.config.ts (JWT_ISSUER,
 * JWT_JWKS_URL, JWT_APPLICATION_ID); clients subscribe on /api/<v>/sync.
 */
import { readFileSync } from "node:fs";
import { createVerifier, providersFromAuthConfig } from "./jwt";
import { bearerVerifier, enableLiveClients } from "./live";
import { convexModules } from "./modules";
import { startBackend } from "./server";

/**
 * Ancestors up to and including the `npm` process that started us (or just
 * the parent). `npm run` cannot forward SIGKILL, so a harness that kills npm
 * would orphan this server; we poll the chain and exit when any link is gone.
 */
function launcherChain(): number[] {
  const chain: number[] = [];
  let pid = process.ppid;
  try {
    for (let i = 0; i < 6 && pid > 1; i++) {
      chain.push(pid);
      const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ");
      if (/(^|\/|\s)npm(-cli\.js)?(\s|$)/.test(cmd)) return chain;
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      pid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    }
  } catch {
    // No /proc: fall back to the direct parent.
  }
  return chain.slice(0, 1);
}

function alive(pid: number) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

function parseCli(argv: string[]) {
  let port = 3210;
  let adminKey = process.env.CONVEX_ADMIN_KEY ?? process.env.CONVEX_SELF_HOSTED_ADMIN_KEY ?? "";
  let host = "127.0.0.1";
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    if (a === "--port") port = Number(next());
    else if (a === "--admin-key") adminKey = next();
    else if (a === "--host") host = next();
    else if (a === "--") continue;
    else throw new Error(`unknown argument ${a} (use --port <port> --admin-key <key> [--host <addr>])`);
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error("--port must be 0..65535");
  if (adminKey === "") throw new Error("--admin-key <key> (or CONVEX_ADMIN_KEY) is required");
  return { port, adminKey, host };
}

try {
  const opts = parseCli(process.argv.slice(2));
  const verifier = createVerifier({ providers: await providersFromAuthConfig() });
  const b = await startBackend({ ...opts, verifyBearer: bearerVerifier(verifier) });
  enableLiveClients(b, { verifier, adminKey: opts.adminKey, modules: convexModules() });
  const issuers = verifier.providers.map((p) => p.issuer).join(", ");
  console.error(
    issuers === ""
      ? "local-backend: no JWT provider configured (JWT_ISSUER, JWT_JWKS_URL, JWT_APPLICATION_ID unset): Bearer tokens are refused"
      : `local-backend: Bearer tokens verified against ${issuers}`,
  );
  console.log(`local convex backend listening on ${b.url}`);
  const stop = () => {
    b.close().then(() => process.exit(0));
    setTimeout(() => process.exit(0), 1000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  const chain = launcherChain();
  setInterval(() => {
    if (!chain.every(alive)) stop();
  }, 500).unref();
} catch (e) {
  console.error(`local-backend: ${(e as Error).message}`);
  process.exit(2);
}
