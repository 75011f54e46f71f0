/**
 * Turns a request's `Authorization` header into who is calling:
 * - `Convex <admin key>` → admin (may call internal functions), no identity;
 * - `Bearer <JWT>` → a user identity for public functions, from the
 *   `BearerVerifier` (the default one only DECODES the token — test only);
 * - nothing → anonymous.
 * Anything else, or a wrong admin key, is a 401.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { UserIdentity } from "convex/server";
import { HttpError } from "./errors";

/** What `ctx.auth.getUserIdentity()` returns to the functions. */
export type Identity = UserIdentity;

export type Caller = { admin: boolean; identity: Identity | null };

/** Checks a bearer token and returns its identity, or throws an `HttpError` (401). */
export type BearerVerifier = (token: string) => Promise<Identity>;

export type Authenticator = (authorization: string | undefined) => Promise<Caller>;

/** TEST ONLY: reads `sub`/`iss` from the JWT payload without checking its signature or expiry. */
export const decodeUnverifiedJwt: BearerVerifier = async (token) => {
  let payload: any;
  try {
    payload = JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8"));
  } catch {
    throw new HttpError(401, "InvalidAuthHeader", "Could not decode the bearer JWT");
  }
  if (typeof payload?.sub !== "string" || payload.sub === "") {
    throw new HttpError(401, "InvalidAuthHeader", "The bearer JWT has no `sub` claim");
  }
  const issuer = typeof payload.iss === "string" ? payload.iss : "local-backend";
  return { subject: payload.sub, issuer, tokenIdentifier: `${issuer}|${payload.sub}` };
};

const digest = (s: string) => createHash("sha256").update(s, "utf8").digest();

/**
 * Whether `candidate` is the admin key, in time independent of where they
 * differ: both are hashed to equal-length digests first, which
 * `timingSafeEqual` needs and which hides the key's length too.
 */
export function isAdminKey(adminKeyDigest: Buffer, candidate: string): boolean {
  return timingSafeEqual(adminKeyDigest, digest(candidate));
}

export function createAuthenticator(opts: { adminKey: string; verifyBearer?: BearerVerifier }): Authenticator {
  const verifyBearer = opts.verifyBearer ?? decodeUnverifiedJwt;
  const adminKeyDigest = digest(opts.adminKey);
  return async (header) => {
    if (header === undefined || header === "") return { admin: false, identity: null };
    const [scheme, ...rest] = header.split(" ");
    const credential = rest.join(" ").trim();
    if (scheme === "Convex") {
      if (!isAdminKey(adminKeyDigest, credential)) {
        throw new HttpError(401, "BadAdminKey", "The provided admin key was invalid for this instance");
      }
      return { admin: true, identity: null };
    }
    if (scheme === "Bearer") return { admin: false, identity: await verifyBearer(credential) };
    throw new HttpError(401, "InvalidAuthHeader", "Authorization must be `Convex <admin key>` or `Bearer <JWT>`");
  };
}
