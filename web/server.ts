/**
 * The demo's app backend: the reference token issuer (JWKS + a DEMO-ONLY
 * `/token?sub=` endpoint) that also serves the live page, bundled at start
 * from web/app.ts with esbuild (the official `convex` client inside).
 *
 *   npm run demo-web -- [--port 0] [--audience projector-demo]
 *   # prints: demo web app listening on http://127.0.0.1:<port>
 *   #         JWT_ISSUER=… JWT_JWKS_URL=… JWT_APPLICATION_ID=…
 *
 * The page is opened as `<url>/?convex=<deployment URL>&user=<user id>`.
 */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { build } from "esbuild";
import { generateIssuerKey, startIssuer, type IssuerServer } from "../tools/token-issuer";

const webDir = dirname(fileURLToPath(import.meta.url));

/** web/app.ts and what it imports, as one browser ES module. */
export async function bundlePage(): Promise<string> {
  const out = await build({
    entryPoints: [join(webDir, "app.ts")],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2020",
    minify: true,
    write: false,
    logLevel: "silent",
  });
  return out.outputFiles[0]!.text;
}

export async function startDemoWeb(
  o: { port?: number; audience?: string; ttlSeconds?: number } = {},
): Promise<IssuerServer> {
  const [js, key] = await Promise.all([bundlePage(), generateIssuerKey()]);
  const html = readFileSync(join(webDir, "index.html"), "utf8");
  return await startIssuer({
    key,
    port: o.port ?? 0,
    audience: o.audience ?? "projector-demo",
    ttlSeconds: o.ttlSeconds,
    devTokenEndpoint: true,
    extra: (req, res) => {
      const path = new URL(req.url ?? "/", "http://localhost").pathname;
      if (req.method !== "GET") return false;
      if (path === "/" || path === "/index.html") {
        res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
        res.end(html);
        return true;
      }
      if (path === "/app.js") {
        res.writeHead(200, { "content-type": "text/javascript; charset=utf-8", "cache-control": "no-store" });
        res.end(js);
        return true;
      }
      return false;
    },
  });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  try {
    const argv = process.argv.slice(2).filter((a) => a !== "--");
    const flag = (name: string) => {
      const i = argv.indexOf(`--${name}`);
      return i >= 0 ? argv[i + 1] : undefined;
    };
    const port = Number(flag("port") ?? 0);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error("--port must be 0..65535");
    const s = await startDemoWeb({ port, audience: flag("audience") });
    console.log(`  JWT_ISSUER=${s.issuer} JWT_JWKS_URL=${s.jwksUrl} JWT_APPLICATION_ID=${s.audience}`);
    console.log(`demo web app listening on ${s.issuer}`);
    const stop = () => s.close().then(() => process.exit(0));
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
    // Exit with the process that started us (npm cannot forward SIGKILL).
    const parent = process.ppid;
    setInterval(() => {
      try {
        process.kill(parent, 0);
      } catch {
        process.exit(0);
      }
    }, 500).unref();
  } catch (e) {
    console.error(`demo-web: ${(e as Error).message}`);
    process.exit(2);
  }
}
