/**
 * The command line of `npm run local-backend`. The admin key comes only from
 * the environment; the host must be loopback unless `--allow-remote`.
 */
import { isLoopback } from "./loopback";

export function parseCli(argv: string[], env: NodeJS.ProcessEnv) {
  let port = 3210;
  let host = "127.0.0.1";
  let allowRemote = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    if (a === "--port") port = Number(next());
    else if (a === "--host") host = next();
    else if (a === "--allow-remote") allowRemote = true;
    else if (a === "--admin-key" || a?.startsWith("--admin-key=")) {
      // Never echo the value: it is a secret.
      throw new Error(
        "--admin-key is not accepted (process arguments are visible to every local user): " +
          "set CONVEX_ADMIN_KEY (or CONVEX_SELF_HOSTED_ADMIN_KEY) in the environment instead",
      );
    } else if (a === "--") continue;
    else throw new Error(`unknown argument ${a} (use --port <port> [--host <addr> [--allow-remote]])`);
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error("--port must be 0..65535");
  const adminKey = env.CONVEX_ADMIN_KEY || env.CONVEX_SELF_HOSTED_ADMIN_KEY || "";
  if (adminKey === "") throw new Error("set the admin key in CONVEX_ADMIN_KEY (or CONVEX_SELF_HOSTED_ADMIN_KEY)");
  if (!isLoopback(host) && !allowRemote) {
    throw new Error(
      `--host ${host} is not a loopback address: this test backend does not verify JWTs and holds an admin key; ` +
        "add --allow-remote to listen there anyway",
    );
  }
  return { port, adminKey, host, allowRemote };
}
