/**
 * Reference token issuer for the app-backend side (docs/client-auth.md):
 * the app backend owns an RS256 key pair, publishes the public half as a
 * JWKS, and mints short-lived JWTs for its logged-in users that Convex
 * accepts through `convex/auth.config.ts` (customJwt: issuer, JWKS URL,
 * applicationID).
 *
 *   tsx tools/token-issuer.ts keygen --out key.json
 *   tsx tools/token-issuer.ts jwks   --key key.json
 *   tsx tools/token-issuer.ts mint   --key key.json --issuer URL --audience ID --sub USER [--ttl 600]
 *   tsx tools/token-issuer.ts serve  [--key key.json] [--port 8788] [--audience ID] [--dev-token-endpoint]
 *
 * Claims of a minted token: iss, aud, sub (the user id = `ownerId` of the
 * read models), iat, nbf = iat, exp = iat + ttl, jti; header alg RS256,
 * typ JWT, kid = the key's RFC 7638 thumbprint.
 */
import { randomUUID } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { pathToFileURL } from "node:url";
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, SignJWT, type JWK } from "jose";

/** Default token lifetime. The official client refreshes 10 s before `exp`. */
export const DEFAULT_TTL_SECONDS = 600;
/** How long Convex (an HTTP cache) may keep the JWKS: a new key must be published this long before it signs. */
export const JWKS_MAX_AGE_SECONDS = 300;
export const JWKS_PATH = "/.well-known/jwks.json";

export interface IssuerKey {
  /** Private JWK (with `kid`, `alg`): keep secret, never log. */
  privateJwk: JWK;
  /** Public JWK published in the JWKS. */
  publicJwk: JWK;
}

export async function generateIssuerKey(): Promise<IssuerKey> {
  const { privateKey, publicKey } = await generateKeyPair("RS256", { modulusLength: 2048, extractable: true });
  const publicJwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(publicJwk);
  const meta = { kid, alg: "RS256", use: "sig" };
  return { privateJwk: { ...(await exportJWK(privateKey)), ...meta }, publicJwk: { ...publicJwk, ...meta } };
}

/** Reads a key written by `keygen` (the private JWK); derives the public one. */
export function readIssuerKey(path: string): IssuerKey {
  const privateJwk = JSON.parse(readFileSync(path, "utf8")) as JWK;
  if (privateJwk.kty !== "RSA" || typeof privateJwk.d !== "string" || typeof privateJwk.kid !== "string") {
    throw new Error(`${path} is not an RSA private JWK with a kid (make one with \`keygen --out ${path}\`)`);
  }
  const { kty, n, e, kid, alg, use } = privateJwk;
  return { privateJwk, publicJwk: { kty, n, e, kid, alg: alg ?? "RS256", use: use ?? "sig" } };
}

export function jwksDocument(keys: IssuerKey[]): { keys: JWK[] } {
  return { keys: keys.map((k) => k.publicJwk) };
}

export interface MintOptions {
  issuer: string;
  audience: string;
  subject: string;
  ttlSeconds?: number;
  /** Seconds since the epoch; default now. */
  issuedAt?: number;
  claims?: Record<string, unknown>;
}

export async function mintToken(key: IssuerKey, o: MintOptions): Promise<string> {
  if (o.subject === "") throw new Error("the subject (user id) must not be empty");
  const ttl = o.ttlSeconds ?? DEFAULT_TTL_SECONDS;
  if (!Number.isFinite(ttl) || ttl <= 2)
    throw new Error("ttl must be more than 2 seconds (the client cannot refresh shorter tokens)");
  const iat = o.issuedAt ?? Math.floor(Date.now() / 1000);
  const signingKey = await importJWK(key.privateJwk, "RS256");
  return await new SignJWT({ ...o.claims })
    .setProtectedHeader({ alg: "RS256", typ: "JWT", kid: key.privateJwk.kid! })
    .setIssuer(o.issuer)
    .setAudience(o.audience)
    .setSubject(o.subject)
    .setIssuedAt(iat)
    .setNotBefore(iat)
    .setExpirationTime(iat + ttl)
    .setJti(randomUUID())
    .sign(signingKey);
}

export interface IssuerServerOptions {
  key: IssuerKey;
  audience: string;
  port?: number;
  host?: string;
  ttlSeconds?: number;
  /**
   * DEMO ONLY: `GET /token?sub=<user>` mints a token for any user who asks.
   * A real app backend mints only for the user of the authenticated session.
   */
  devTokenEndpoint?: boolean;
  /** Extra routes (the demo page), tried after the issuer's own. */
  extra?: (
    req: import("node:http").IncomingMessage,
    res: import("node:http").ServerResponse,
  ) => boolean | Promise<boolean>;
}

export interface IssuerServer {
  server: Server;
  /** `iss` of minted tokens and JWT_ISSUER for Convex. */
  issuer: string;
  /** JWT_JWKS_URL for Convex. */
  jwksUrl: string;
  audience: string;
  /** A token for `subject` (ttl default: the server's; issuedAt default: now). */
  mint(subject: string, o?: { ttlSeconds?: number; issuedAt?: number }): Promise<string>;
  close(): Promise<void>;
}

export async function startIssuer(o: IssuerServerOptions): Promise<IssuerServer> {
  const host = o.host ?? "127.0.0.1";
  const jwks = JSON.stringify(jwksDocument([o.key]));
  let issuer = "";
  const mint = (subject: string, m: { ttlSeconds?: number; issuedAt?: number } = {}) =>
    mintToken(o.key, {
      issuer,
      audience: o.audience,
      subject,
      ttlSeconds: m.ttlSeconds ?? o.ttlSeconds,
      issuedAt: m.issuedAt,
    });
  const server = createServer(async (req, res) => {
    try {
      const url = new URL(req.url ?? "/", "http://localhost");
      if (req.method === "GET" && url.pathname === JWKS_PATH) {
        res.writeHead(200, {
          "content-type": "application/json",
          "cache-control": `public, max-age=${JWKS_MAX_AGE_SECONDS}`,
        });
        res.end(jwks);
        return;
      }
      if (o.devTokenEndpoint && req.method === "GET" && url.pathname === "/token") {
        const sub = url.searchParams.get("sub") ?? "";
        if (sub === "" || sub.length > 200) {
          res.writeHead(400, { "content-type": "application/json" });
          res.end(JSON.stringify({ error: "give ?sub=<user id> (1..200 characters)" }));
          return;
        }
        const token = await mint(sub);
        res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
        res.end(JSON.stringify({ token }));
        return;
      }
      if (o.extra && (await o.extra(req, res))) return;
      res.writeHead(404, { "content-type": "text/plain" });
      res.end("not found");
    } catch (e) {
      if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" });
      res.end(`error: ${(e as Error).message}`);
    }
  });
  await new Promise<void>((ok, fail) => {
    server.once("error", fail);
    server.listen(o.port ?? 0, host, () => ok());
  });
  issuer = `http://${host}:${(server.address() as AddressInfo).port}`;
  return {
    server,
    issuer,
    jwksUrl: issuer + JWKS_PATH,
    audience: o.audience,
    mint,
    close: () =>
      new Promise<void>((ok) => {
        server.closeAllConnections();
        server.close(() => ok());
      }),
  };
}

function parseFlags(argv: string[]): Map<string, string | true> {
  const flags = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${a}`);
    const next = argv[i + 1];
    if (next === undefined || next.startsWith("--")) flags.set(a.slice(2), true);
    else flags.set(a.slice(2), argv[++i]!);
  }
  return flags;
}

function need(flags: Map<string, string | true>, name: string): string {
  const v = flags.get(name);
  if (typeof v !== "string" || v === "") throw new Error(`--${name} <value> is required`);
  return v;
}

async function cli(argv: string[]) {
  const [cmd, ...rest] = argv;
  const flags = parseFlags(rest);
  switch (cmd) {
    case "keygen": {
      const out = need(flags, "out");
      if (existsSync(out)) throw new Error(`${out} exists: refusing to overwrite a key (remove it first, or choose another --out)`);
      const key = await generateIssuerKey();
      writeFileSync(out, JSON.stringify(key.privateJwk, null, 2) + "\n", { mode: 0o600, flag: "wx" });
      console.log(`wrote the private key to ${out} (kid ${key.publicJwk.kid}); publish \`jwks --key ${out}\``);
      return;
    }
    case "jwks":
      console.log(JSON.stringify(jwksDocument([readIssuerKey(need(flags, "key"))]), null, 2));
      return;
    case "mint": {
      const key = readIssuerKey(need(flags, "key"));
      const ttl = flags.has("ttl") ? Number(need(flags, "ttl")) : undefined;
      console.log(
        await mintToken(key, {
          issuer: need(flags, "issuer"),
          audience: need(flags, "audience"),
          subject: need(flags, "sub"),
          ttlSeconds: ttl,
        }),
      );
      return;
    }
    case "serve": {
      const key = flags.has("key") ? readIssuerKey(need(flags, "key")) : await generateIssuerKey();
      const port = flags.has("port") ? Number(need(flags, "port")) : 8788;
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error("--port must be 0..65535");
      const audience = flags.has("audience") ? need(flags, "audience") : "projector-clients";
      const s = await startIssuer({ key, port, audience, devTokenEndpoint: flags.get("dev-token-endpoint") === true });
      console.log(`token issuer listening on ${s.issuer}`);
      console.log(`  JWT_ISSUER=${s.issuer} JWT_JWKS_URL=${s.jwksUrl} JWT_APPLICATION_ID=${audience}`);
      const stop = () => s.close().then(() => process.exit(0));
      process.on("SIGTERM", stop);
      process.on("SIGINT", stop);
      return;
    }
    default:
      throw new Error(
        "usage: token-issuer keygen|jwks|mint|serve (see the comment at the top of tools/token-issuer.ts)",
      );
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  cli(process.argv.slice(2)).catch((e) => {
    console.error(`token-issuer: ${(e as Error).message}`);
    process.exit(2);
  });
}
