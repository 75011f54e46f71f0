/**
 * Verification of client JWTs the way Convex's `customJwt` provider does it
 * (convex-backend `crates/authentication/src/lib.rs`, `validate_id_token`),
 * for the providers of `convex/auth.config.ts`. Signatures are checked by
 * `jose`; this module only decides which provider, which key and which
 * claims, in Convex's order and with Convex's error answers:
 *
 *  1. the unverified payload must parse and carry `iss`;
 *  2. the provider is the first whose issuer matches `iss` (a missing scheme
 *     counts as https://, trailing slashes ignored) and, when it has an
 *     applicationID, whose applicationID is among `aud`;
 *  3. its JWKS (an http(s) or data: URL) is fetched, cached per Cache-Control;
 *  4. the header's `kid` must name a key of the JWKS and the signature must
 *     verify with the provider's algorithm;
 *  5. `iss` and `aud` are checked again on the verified payload;
 *  6. `exp`, `nbf` and `iat` are checked against the current second with 5 s
 *     of leeway (biscuit's TemporalOptions epsilon); none of them is
 *     required by this step;
 *  7. `sub` and `exp` must be present (UserIdentity::from_custom_jwt).
 *
 * Every refusal is an `AuthRefused` (Convex ErrorMetadata "unauthenticated",
 * HTTP 401) whose `code` and `message` are Convex's short and long messages.
 */
import { base64url, compactVerify, importJWK, type JWK } from "jose";

/** One `customJwt` entry of auth.config.ts, as Convex stores it. */
export interface CustomJwtProvider {
  type: "customJwt";
  issuer: string;
  jwks: string;
  applicationID?: string;
  algorithm: "RS256" | "ES256";
}

/** What a verified token makes of the caller (Convex's UserIdentity). */
export interface VerifiedIdentity {
  subject: string;
  issuer: string;
  tokenIdentifier: string;
  /** `exp` in milliseconds since the epoch: the identity is invalid from then on. */
  expiresAtMs: number;
  /** Non-registered claims, nested objects flattened to dotted keys. */
  customClaims: Record<string, unknown>;
}

/** A refused token or header: Convex's `ErrorMetadata::unauthenticated(code, message)`. */
export class AuthRefused extends Error {
  readonly status = 401;
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** A provider that cannot be used at all: deploying this config to Convex fails the same way. */
export class AuthConfigError extends Error {}

/** biscuit TemporalOptions epsilon used by Convex for custom JWTs. */
export const LEEWAY_SECONDS = 5;
const JWKS_FETCH_TIMEOUT_MS = 10_000;
const JWKS_MEDIA_TYPES = ["application/json", "application/jwk-set+json"];
const REGISTERED_CLAIMS = new Set(["iss", "sub", "aud", "exp", "nbf", "iat", "jti"]);

/**
 * Checks providers the way Convex does when it reads auth.config.ts
 * (`deserialize_issuer_url`, `SignatureAlgorithm::from_str`): a bad entry
 * throws with the fix, so the backend fails at start rather than per request.
 */
export function validateProviders(raw: unknown): CustomJwtProvider[] {
  if (!Array.isArray(raw)) throw new AuthConfigError("auth.config.ts: `providers` must be an array");
  return raw.map((p: any, i) => {
    const where = `auth.config.ts providers[${i}]`;
    if (p?.type !== "customJwt") {
      throw new AuthConfigError(`${where}: only {type: "customJwt"} providers are supported by the local backend`);
    }
    if (typeof p.issuer !== "string" || p.issuer === "") {
      throw new AuthConfigError(`${where}: issuer is not set (set JWT_ISSUER, e.g. http://127.0.0.1:8788)`);
    }
    if (typeof p.jwks !== "string" || p.jwks === "") {
      throw new AuthConfigError(
        `${where}: jwks is not set (set JWT_JWKS_URL, e.g. http://127.0.0.1:8788/.well-known/jwks.json)`,
      );
    }
    if (p.applicationID !== undefined && (typeof p.applicationID !== "string" || p.applicationID === "")) {
      throw new AuthConfigError(`${where}: applicationID is empty (set JWT_APPLICATION_ID, e.g. projector-clients)`);
    }
    if (p.algorithm !== "RS256" && p.algorithm !== "ES256") {
      throw new AuthConfigError(
        `${where}: Invalid signature algorithm (only RS256 and ES256 are supported): ${JSON.stringify(p.algorithm)}`,
      );
    }
    return {
      type: "customJwt",
      issuer: issuerUrl(p.issuer, where),
      jwks: p.jwks,
      applicationID: p.applicationID,
      algorithm: p.algorithm,
    };
  });
}

/** Convex's `deserialize_issuer_url`: a scheme is added when missing; only http(s). */
function issuerUrl(original: string, where: string): string {
  if (original.startsWith('"')) {
    throw new AuthConfigError(`${where}: Invalid provider domain URL "${original}": starts with a double quote (")`);
  }
  const hadScheme = /^\w+:\/\//.test(original);
  const url = hadScheme ? original : `https://${original}`;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (e) {
    throw new AuthConfigError(`${where}: Invalid provider domain URL "${original}": ${(e as Error).message}`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new AuthConfigError(`${where}: Invalid provider domain URL "${original}": scheme should be http or https`);
  }
  if (!hadScheme && !(parsed.hostname === "localhost" || /\.[a-z]{2,}$/i.test(parsed.hostname))) {
    throw new AuthConfigError(
      `${where}: Invalid provider domain URL "${original}": Does not look like a URL (must have a scheme or end with a top-level domain)`,
    );
  }
  return url;
}

/** The token's `iss` as Convex compares it: https:// added when it has no scheme, no trailing slash. */
function normalizeIssuer(iss: string): string {
  const withScheme = iss.startsWith("https://") || iss.startsWith("http://") ? iss : `https://${iss}`;
  return withScheme.replace(/\/+$/, "");
}

function audiences(aud: unknown): string[] {
  if (typeof aud === "string") return [aud];
  if (Array.isArray(aud)) return aud.filter((a): a is string => typeof a === "string");
  return [];
}

function noProviderMessage(providers: CustomJwtProvider[], redact: boolean): string {
  if (redact) return "No auth provider found matching the given token";
  if (providers.length === 0) {
    return "No auth provider found matching the given token (no providers configured). Check convex/auth.config.ts.";
  }
  const list = providers.map((p) => `CustomJWT(issuer=${p.issuer}, app_id=${p.applicationID ?? "none"})`).join(", ");
  return (
    "No auth provider found matching the given token. Check that your JWT's issuer and audience match one of " +
    `your configured providers: [${list}]`
  );
}

/** Rust's `{:?}` of a Vec<&str>, as Convex prints audiences. */
function debugList(xs: string[]): string {
  return `[${xs.map((x) => JSON.stringify(x)).join(", ")}]`;
}

interface CachedJwks {
  keys: JWK[];
  freshUntilMs: number;
}

/** Freshness lifetime in ms from Cache-Control (a shared HTTP cache's view), 0 when not cacheable. */
export function freshnessMs(headers: Headers): number {
  const cc = (headers.get("cache-control") ?? "").toLowerCase();
  const directives = new Map<string, string | true>();
  for (const part of cc.split(",")) {
    const [k, v] = part.trim().split("=", 2);
    if (k) directives.set(k, v === undefined ? true : v.replace(/^"|"$/g, ""));
  }
  if (directives.has("no-store") || directives.has("no-cache") || directives.has("private")) return 0;
  const raw = directives.get("s-maxage") ?? directives.get("max-age");
  const seconds = typeof raw === "string" ? Number(raw) : NaN;
  if (!Number.isFinite(seconds) || seconds <= 0) return 0;
  const age = Number(headers.get("age") ?? 0);
  return Math.max(0, seconds - (Number.isFinite(age) ? age : 0)) * 1000;
}

export interface VerifierOptions {
  providers: CustomJwtProvider[];
  /** Injected for tests; defaults to global fetch. */
  fetch?: typeof fetch;
  /** Injected for tests; milliseconds since the epoch. */
  now?: () => number;
  /** Prod deployments redact which providers exist and which kid was sent. */
  redactErrors?: boolean;
}

export interface Verifier {
  readonly providers: readonly CustomJwtProvider[];
  verify(token: string): Promise<VerifiedIdentity>;
  /** JWKS documents fetched over HTTP so far (cache misses), for tests. */
  readonly jwksFetches: number;
}

export function createVerifier(opts: VerifierOptions): Verifier {
  const doFetch = opts.fetch ?? fetch;
  const now = opts.now ?? Date.now;
  const redact = opts.redactErrors ?? false;
  const cache = new Map<string, CachedJwks>();
  // One request per URL at a time: a burst of connecting clients shares it.
  const inFlight = new Map<string, Promise<JWK[]>>();
  let fetches = 0;

  async function fetchJwks(url: string): Promise<JWK[]> {
    if (url.startsWith("data:")) return parseJwks(url, await dataUrlBody(url));
    const hit = cache.get(url);
    if (hit && hit.freshUntilMs > now()) return hit.keys;
    const pending = inFlight.get(url);
    if (pending) return pending;
    const p = (async () => {
      fetches++;
      let res: Response;
      try {
        res = await doFetch(url, {
          headers: { accept: "application/json" },
          signal: AbortSignal.timeout(JWKS_FETCH_TIMEOUT_MS),
        });
      } catch (e) {
        throw new AuthRefused(
          "InvalidAuthHeader",
          `Could not fetch JWKS from URL '${url}': ${(e as Error).message}. Check that the URL is correct and accessible.`,
        );
      }
      const body = await res.text().catch(() => "");
      if (res.status !== 200) {
        throw new AuthRefused(
          "InvalidAuthHeader",
          `Could not fetch JWKS from URL '${url}': HTTP ${res.status} ${res.statusText || "Unknown"}. Check that the URL is correct and accessible.`,
        );
      }
      const contentType = res.headers.get("content-type");
      if (!jwksMediaType(contentType)) {
        throw new AuthRefused(
          "InvalidAuthHeader",
          `Invalid Content-Type '${contentType ?? "unknown"}' when fetching JWKS from '${url}'. Expected 'application/json' or 'application/jwk-set+json'.`,
        );
      }
      const keys = parseJwks(url, body);
      const ttl = freshnessMs(res.headers);
      if (ttl > 0) cache.set(url, { keys, freshUntilMs: now() + ttl });
      else cache.delete(url);
      return keys;
    })();
    inFlight.set(url, p);
    try {
      return await p;
    } finally {
      inFlight.delete(url);
    }
  }

  async function verify(token: string): Promise<VerifiedIdentity> {
    // 1. Route by the unverified payload.
    let unverified: any;
    try {
      const parts = token.split(".");
      if (parts.length !== 3) throw new Error("not three parts");
      unverified = JSON.parse(new TextDecoder().decode(base64url.decode(parts[1]!)));
      checkClaimTypes(unverified);
    } catch {
      throw new AuthRefused(
        "InvalidAuthHeader",
        "Could not parse JWT payload. Check that the token is a valid JWT format with three base64-encoded parts separated by dots.",
      );
    }
    if (typeof unverified.iss !== "string") {
      throw new AuthRefused(
        "InvalidAuthHeader",
        "Missing issuer claim ('iss') in JWT payload. The JWT must include an 'iss' claim that matches one of your configured auth providers.",
      );
    }
    const tokenAud = audiences(unverified.aud);
    const provider = opts.providers.find(
      (p) =>
        (p.applicationID === undefined || tokenAud.includes(p.applicationID)) &&
        p.issuer.replace(/\/+$/, "") === normalizeIssuer(unverified.iss),
    );
    if (!provider) throw new AuthRefused("NoAuthProvider", noProviderMessage(opts.providers, redact));

    // 3-4. Key by kid, signature by jose.
    const keys = await fetchJwks(provider.jwks);
    const payload = await verifySignature(token, keys, provider.algorithm, redact);

    // 5. Claims on the verified payload.
    const iss: string = payload.iss;
    if (normalizeIssuer(iss) !== provider.issuer.replace(/\/+$/, "")) {
      throw new AuthRefused("InvalidAuthHeader", `Invalid issuer: ${iss} != ${provider.issuer}`);
    }
    if (provider.applicationID !== undefined) {
      if (payload.aud === undefined) {
        throw new AuthRefused(
          "InvalidAuthHeader",
          "Missing audience claim ('aud') in JWT payload. The JWT must include an 'aud' claim that matches your configured application ID.",
        );
      }
      const aud = audiences(payload.aud);
      if (!aud.includes(provider.applicationID)) {
        throw new AuthRefused(
          "InvalidAuthHeader",
          `Invalid audience: ${provider.applicationID} not in ${debugList(aud)}`,
        );
      }
    }

    // 6. Temporal claims, whole seconds (biscuit truncates fractional timestamps).
    const nowS = Math.floor(now() / 1000);
    const exp = timestamp(payload.exp);
    const nbf = timestamp(payload.nbf);
    const iat = timestamp(payload.iat);
    const invalid = (why: string) => new AuthRefused("InvalidAuthHeader", `Could not validate token: ${why}`);
    if (exp !== undefined && nowS - exp > LEEWAY_SECONDS) throw invalid(`Token expired ${nowS - exp} seconds ago`);
    if (nbf !== undefined && nbf - nowS > LEEWAY_SECONDS) throw invalid(`Token will be valid in ${nbf - nowS} seconds`);
    if (iat !== undefined && iat - nowS > LEEWAY_SECONDS) throw invalid(`Token will be valid in ${iat - nowS} seconds`);

    // 7. UserIdentity::from_custom_jwt: sub and exp are required (its own
    // message is wrapped in this context, which is what callers see).
    if (typeof payload.sub !== "string" || exp === undefined) {
      throw new AuthRefused(
        "InvalidAuthHeader",
        "Could not verify token claim. Check that the JWT contains valid claims and matches your auth provider configuration.",
      );
    }
    const customClaims: Record<string, unknown> = {};
    flattenClaims(payload, "", customClaims);
    return {
      subject: payload.sub,
      issuer: iss,
      tokenIdentifier: `${iss}|${payload.sub}`,
      expiresAtMs: exp * 1000,
      customClaims,
    };
  }

  return {
    providers: opts.providers,
    verify,
    get jwksFetches() {
      return fetches;
    },
  };
}

function jwksMediaType(contentType: string | null): boolean {
  if (contentType === null) return false;
  const [essence, ...params] = contentType.split(";").map((s) => s.trim());
  if (!JWKS_MEDIA_TYPES.includes((essence ?? "").toLowerCase())) return false;
  const charset = params.find((p) => p.toLowerCase().startsWith("charset="));
  return charset === undefined || charset.slice("charset=".length) === "utf-8";
}

async function dataUrlBody(url: string): Promise<string> {
  try {
    const res = await fetch(url);
    return await res.text();
  } catch {
    throw new AuthRefused(
      "InvalidAuthHeader",
      "Invalid JWKS data URL. Check that the data URL is properly formatted and contains valid base64-encoded JSON.",
    );
  }
}

function parseJwks(url: string, body: string): JWK[] {
  try {
    const doc = JSON.parse(body);
    if (!Array.isArray(doc?.keys) || !doc.keys.every((k: unknown) => typeof k === "object" && k !== null)) {
      throw new Error("no keys array");
    }
    return doc.keys as JWK[];
  } catch {
    throw new AuthRefused(
      "InvalidAuthHeader",
      `Invalid JWKS response body from '${url}'. The response is not valid JSON or doesn't match the expected JWKS format.`,
    );
  }
}

/**
 * biscuit's `decode_with_jwks`: the header must carry a `kid` found in the
 * JWKS, the key's and header's algorithms must be the provider's, and the
 * signature must verify. Every failure reads as Convex's kid message.
 */
async function verifySignature(token: string, keys: JWK[], algorithm: string, redact: boolean): Promise<any> {
  let kid: string | undefined;
  try {
    const header = JSON.parse(new TextDecoder().decode(base64url.decode(token.split(".")[0] ?? "")));
    kid = typeof header?.kid === "string" ? header.kid : undefined;
    if (kid === undefined) throw new Error("KidMissing");
    const jwk = keys.find((k) => k.kid === kid);
    if (!jwk) throw new Error("KeyNotFound");
    if (header.alg !== algorithm || (jwk.alg !== undefined && jwk.alg !== algorithm))
      throw new Error("WrongAlgorithmHeader");
    const key = await importJWK(jwk, algorithm);
    const { payload } = await compactVerify(token, key, { algorithms: [algorithm] });
    const claims = JSON.parse(new TextDecoder().decode(payload));
    checkClaimTypes(claims);
    return claims;
  } catch {
    let message =
      kid !== undefined
        ? `Could not decode token. The JWT's 'kid' (key ID) header is '${kid}', does this key match any key in the provider's JWKS?`
        : "Could not decode token. JWT may be missing a 'kid' (key ID) header.";
    if (redact && kid !== undefined) {
      message =
        "Could not decode token. The JWT's 'kid' (key ID) header doesn't match any key in the provider's JWKS, or the JWT signature is invalid.";
    }
    throw new AuthRefused("InvalidAuthHeader", message);
  }
}

/** Registered claims biscuit deserializes with a type: a wrong type fails decoding. */
function checkClaimTypes(c: any) {
  if (typeof c !== "object" || c === null || Array.isArray(c)) throw new Error("payload not an object");
  for (const k of ["iss", "sub", "jti"]) if (c[k] !== undefined && typeof c[k] !== "string") throw new Error(k);
  for (const k of ["exp", "nbf", "iat"])
    if (c[k] !== undefined && (typeof c[k] !== "number" || !Number.isFinite(c[k]))) throw new Error(k);
  if (
    c.aud !== undefined &&
    typeof c.aud !== "string" &&
    !(Array.isArray(c.aud) && c.aud.every((a: unknown) => typeof a === "string"))
  ) {
    throw new Error("aud");
  }
}

function timestamp(x: unknown): number | undefined {
  return typeof x === "number" ? Math.trunc(x) : undefined;
}

function flattenClaims(obj: Record<string, unknown>, prefix: string, out: Record<string, unknown>) {
  for (const [k, v] of Object.entries(obj)) {
    if (prefix === "" && (REGISTERED_CLAIMS.has(k) || k === "fva")) continue;
    if (typeof v === "object" && v !== null && !Array.isArray(v))
      flattenClaims(v as Record<string, unknown>, `${prefix}${k}.`, out);
    else out[`${prefix}${k}`] = v;
  }
}

/**
 * The providers of `convex/auth.config.ts`, read from the environment it
 * reads (JWT_ISSUER, JWT_JWKS_URL, JWT_APPLICATION_ID). With none of the
 * three set there are no providers (every Bearer token is refused with
 * NoAuthProvider); with only some set the config is broken: throw the fix.
 */
export async function providersFromAuthConfig(): Promise<CustomJwtProvider[]> {
  const names = ["JWT_ISSUER", "JWT_JWKS_URL", "JWT_APPLICATION_ID"] as const;
  const set = names.filter((n) => (process.env[n] ?? "") !== "");
  if (set.length === 0) return [];
  if (set.length < names.length) {
    const missing = names.filter((n) => !set.includes(n));
    throw new AuthConfigError(
      `convex/auth.config.ts reads ${names.join(", ")}; ${missing.join(", ")} ${missing.length === 1 ? "is" : "are"} not set. ` +
        "Set all three (see docs/client-auth.md) or none.",
    );
  }
  const mod = await import("../convex/auth.config");
  return validateProviders(mod.default.providers);
}
