/**
 * `CONVEX_ADMIN_KEY=<key> npm run local-backend -- --port <port|0> [--host <addr> [--allow-remote]]`:
 * starts the backend, prints `local convex backend listening on <url>`, and
 * exits on SIGTERM/SIGINT or when the process that launched it dies.
 * The admin key comes only from the environment (CONVEX_ADMIN_KEY, then
 * CONVEX_SELF_HOSTED_ADMIN_KEY): process arguments are world-readable.
 */
import { readFileSync } from "node:fs";
import { parseCli } from "./cli";
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

try {
  const opts = parseCli(process.argv.slice(2), process.env);
  const b = await startBackend(opts);
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
