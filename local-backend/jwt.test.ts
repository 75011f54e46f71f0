// JWT verification against Convex's customJwt rules, with keys and JWKS
// served over HTTP by the reference issuer (tools/token-issuer.ts).
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { importJWK, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import {
  generateIssuerKey,
  jwksDocument,
  mintToken,
  startIssuer,
  type IssuerKey,
  type IssuerServer,
} from "../tools/token-issuer";
import {
  AuthConfigError,
  AuthRefused,
  createVerifier,
  freshnessMs,
  validateProviders,
  type CustomJwtProvider,
} from "./jwt";

const AUD = "projector-clients";
let issuer: IssuerServer;
let key: IssuerKey;
let provider: CustomJwtProvider;

beforeAll(async () => {
  key = await generateIssuerKey();
  issuer = await startIssuer({ key, audience: AUD });
  provider = { type: "customJwt", issuer: issuer.issuer, jwks: issuer.jwksUrl, applicationID: AUD, algorithm: "RS256" };
});
afterAll(() => issuer.close());

const nowS = () => Math.floor(Date.now() / 1000);

async function refusal(p: Promise<unknown>): Promise<AuthRefused> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(AuthRefused);
    return e as AuthRefused;
  }
  throw new Error("the token was accepted");
}

/** A token with full control over header and claims, signed by `k`. */
async function custom(
  k: IssuerKey,
  claims: Record<string, unknown>,
  header: Record<string, unknown> = { alg: "RS256", kid: k.privateJwk.kid },
) {
  return await new SignJWT(claims).setProtectedHeader(header as any).sign(await importJWK(k.privateJwk, "RS256"));
}

describe("a valid token", () => {
  test("becomes the identity Convex gives queries", async () => {
    const v = createVerifier({ providers: [provider] });
    const token = await issuer.mint("alice", { ttlSeconds: 300 });
    const id = await v.verify(token);
    expect(id.subject).toBe("alice");
    expect(id.issuer).toBe(issuer.issuer);
    expect(id.tokenIdentifier).toBe(`${issuer.issuer}|alice`);
    expect(id.expiresAtMs).toBeGreaterThan(Date.now() + 290_000);
    expect(id.customClaims).toEqual({});
  });

  test("iss without a scheme and trailing slashes match the configured issuer", async () => {
    const host = "auth.example.com";
    const v = createVerifier({ providers: validateProviders([{ ...provider, issuer: host }]) });
    for (const iss of [host, `https://${host}/`]) {
      const t = await mintToken(key, { issuer: iss, audience: AUD, subject: "bob", ttlSeconds: 60 });
      // The JWKS is fetched from the configured URL, whatever the issuer's host.
      expect((await v.verify(t)).subject).toBe("bob");
    }
  });
});

describe("temporal claims: 5 s of leeway on the current whole second", () => {
  test("exp", async () => {
    const at = nowS();
    // The clock is at the end of the second: only whole seconds count.
    const now = () => at * 1000 + 999;
    const fixed = createVerifier({ providers: [provider], now });
    // 5 s past exp is still inside the leeway; 6 s is not.
    await fixed.verify(await custom(key, { iss: issuer.issuer, aud: AUD, sub: "a", exp: at - 5 }));
    const e = await refusal(fixed.verify(await custom(key, { iss: issuer.issuer, aud: AUD, sub: "a", exp: at - 6 })));
    expect([e.code, e.message]).toEqual(["InvalidAuthHeader", "Could not validate token: Token expired 6 seconds ago"]);
    expect(e.status).toBe(401);
  });

  test("nbf and iat in the future", async () => {
    const at = nowS();
    const v = createVerifier({ providers: [provider], now: () => at * 1000 });
    await v.verify(
      await custom(key, { iss: issuer.issuer, aud: AUD, sub: "a", exp: at + 60, nbf: at + 5, iat: at + 5 }),
    );
    const nbf = await refusal(
      v.verify(await custom(key, { iss: issuer.issuer, aud: AUD, sub: "a", exp: at + 60, nbf: at + 30 })),
    );
    expect(nbf.message).toBe("Could not validate token: Token will be valid in 30 seconds");
    const iat = await refusal(
      v.verify(await custom(key, { iss: issuer.issuer, aud: AUD, sub: "a", exp: at + 60, iat: at + 7 })),
    );
    expect(iat.message).toBe("Could not validate token: Token will be valid in 7 seconds");
  });

  test("fractional timestamps are truncated, as biscuit does", async () => {
    const at = nowS();
    const v = createVerifier({ providers: [provider], now: () => at * 1000 });
    const e = await refusal(v.verify(await custom(key, { iss: issuer.issuer, aud: AUD, sub: "a", exp: at - 6.9 })));
    // at - 6.9 = (at - 7) + 0.1, truncated to at - 7.
    expect(e.message).toBe("Could not validate token: Token expired 7 seconds ago");
  });
});

describe("refused tokens, with Convex's answers", () => {
  test("a foreign issuer or audience matches no provider", async () => {
    const v = createVerifier({ providers: [provider] });
    const list = `[CustomJWT(issuer=${issuer.issuer}, app_id=${AUD})]`;
    for (const t of [
      await mintToken(key, { issuer: "https://evil.example.com", audience: AUD, subject: "alice" }),
      await mintToken(key, { issuer: issuer.issuer, audience: "someone-else", subject: "alice" }),
    ]) {
      const e = await refusal(v.verify(t));
      expect(e.code).toBe("NoAuthProvider");
      expect(e.message).toBe(
        `No auth provider found matching the given token. Check that your JWT's issuer and audience match one of your configured providers: ${list}`,
      );
    }
    const none = await refusal(createVerifier({ providers: [] }).verify(await issuer.mint("alice")));
    expect(none.message).toBe(
      "No auth provider found matching the given token (no providers configured). Check convex/auth.config.ts.",
    );
    const redacted = await refusal(
      createVerifier({ providers: [provider], redactErrors: true }).verify(
        await mintToken(key, { issuer: "https://evil.example.com", audience: AUD, subject: "alice" }),
      ),
    );
    expect(redacted.message).toBe("No auth provider found matching the given token");
  });

  test("a signature by another key, a tampered payload, an unknown or missing kid", async () => {
    const v = createVerifier({ providers: [provider] });
    const kid = key.privateJwk.kid!;
    const kidMessage = `Could not decode token. The JWT's 'kid' (key ID) header is '${kid}', does this key match any key in the provider's JWKS?`;
    // Another private key claiming our kid.
    const other = await generateIssuerKey();
    const forged = await custom(
      other,
      { iss: issuer.issuer, aud: AUD, sub: "alice", exp: nowS() + 60 },
      { alg: "RS256", kid },
    );
    expect((await refusal(v.verify(forged))).message).toBe(kidMessage);
    // A real token whose payload was swapped for another user's.
    const [h, , s] = (await issuer.mint("alice")).split(".");
    const bobPayload = (await issuer.mint("bob")).split(".")[1];
    expect((await refusal(v.verify(`${h}.${bobPayload}.${s}`))).message).toBe(kidMessage);
    // A kid the JWKS does not have.
    const unknown = await custom(other, { iss: issuer.issuer, aud: AUD, sub: "a", exp: nowS() + 60 });
    expect((await refusal(v.verify(unknown))).message).toContain(`header is '${other.privateJwk.kid}'`);
    // No kid at all.
    const noKid = await custom(key, { iss: issuer.issuer, aud: AUD, sub: "a", exp: nowS() + 60 }, { alg: "RS256" });
    expect((await refusal(v.verify(noKid))).message).toBe(
      "Could not decode token. JWT may be missing a 'kid' (key ID) header.",
    );
  });

  test("an algorithm other than the provider's", async () => {
    const v = createVerifier({ providers: [provider] });
    const kid = key.privateJwk.kid!;
    const hs = await new SignJWT({ iss: issuer.issuer, aud: AUD, sub: "a", exp: nowS() + 60 })
      .setProtectedHeader({ alg: "HS256", kid })
      .sign(new TextEncoder().encode("x".repeat(32)));
    expect((await refusal(v.verify(hs))).message).toContain(`header is '${kid}'`);
  });

  test("malformed tokens and missing claims", async () => {
    const v = createVerifier({ providers: [provider] });
    for (const t of ["", "abc", "a.b.c", `x.${Buffer.from('{"iss":5}').toString("base64url")}.y`]) {
      expect((await refusal(v.verify(t))).message).toMatch(/^Could not parse JWT payload/);
    }
    const noIss = await custom(key, { aud: AUD, sub: "a", exp: nowS() + 60 });
    expect((await refusal(v.verify(noIss))).message).toMatch(/^Missing issuer claim \('iss'\)/);
    for (const claims of [
      { aud: AUD, exp: nowS() + 60 },
      { aud: AUD, sub: "a" },
    ]) {
      const t = await custom(key, { iss: issuer.issuer, ...claims });
      expect((await refusal(v.verify(t))).message).toBe(
        "Could not verify token claim. Check that the JWT contains valid claims and matches your auth provider configuration.",
      );
    }
  });
});

describe("the JWKS", () => {
  test("is fetched once while fresh (Cache-Control max-age), again when stale", async () => {
    let clock = Date.now();
    const v = createVerifier({ providers: [provider], now: () => clock });
    const t = await issuer.mint("alice");
    await Promise.all([v.verify(t), v.verify(t), v.verify(t)]);
    expect(v.jwksFetches).toBe(1);
    clock += 299_000;
    await v.verify(t);
    expect(v.jwksFetches).toBe(1);
    clock += 2_000;
    await v.verify(t);
    expect(v.jwksFetches).toBe(2);
  });

  test("freshness follows the headers", () => {
    const h = (cc: string, age?: string) => new Headers({ "cache-control": cc, ...(age ? { age } : {}) });
    expect(freshnessMs(h("public, max-age=300"))).toBe(300_000);
    expect(freshnessMs(h("max-age=300, s-maxage=60"))).toBe(60_000);
    expect(freshnessMs(h("max-age=300", "100"))).toBe(200_000);
    expect(freshnessMs(h("no-store, max-age=300"))).toBe(0);
    expect(freshnessMs(h("private, max-age=300"))).toBe(0);
    expect(freshnessMs(new Headers())).toBe(0);
  });

  test("a failing or mistyped JWKS endpoint refuses the token with the reason", async () => {
    let mode = "500";
    const srv = createServer((_req, res) => {
      if (mode === "500") res.writeHead(500).end("boom");
      else if (mode === "html") res.writeHead(200, { "content-type": "text/html" }).end("<html>");
      else res.writeHead(200, { "content-type": "application/json" }).end("{not json");
    });
    await new Promise<void>((ok) => srv.listen(0, "127.0.0.1", ok));
    const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}/jwks`;
    try {
      const v = createVerifier({ providers: [{ ...provider, jwks: url }] });
      const t = await issuer.mint("alice");
      expect((await refusal(v.verify(t))).message).toBe(
        `Could not fetch JWKS from URL '${url}': HTTP 500 Internal Server Error. Check that the URL is correct and accessible.`,
      );
      mode = "html";
      expect((await refusal(v.verify(t))).message).toBe(
        `Invalid Content-Type 'text/html' when fetching JWKS from '${url}'. Expected 'application/json' or 'application/jwk-set+json'.`,
      );
      mode = "bad";
      expect((await refusal(v.verify(t))).message).toMatch(/^Invalid JWKS response body from/);
    } finally {
      srv.close();
    }
  });

  test("may be a data: URL", async () => {
    const data = `data:application/json;base64,${Buffer.from(JSON.stringify(jwksDocument([key]))).toString("base64")}`;
    const v = createVerifier({ providers: [{ ...provider, jwks: data }] });
    expect((await v.verify(await issuer.mint("carol"))).subject).toBe("carol");
    expect(v.jwksFetches).toBe(0);
  });
});

test("bad provider config fails with the fix", () => {
  expect(() => validateProviders([{ ...provider, issuer: undefined }])).toThrow(/set JWT_ISSUER/);
  expect(() => validateProviders([{ ...provider, algorithm: "HS256" }])).toThrow(/only RS256 and ES256/);
  expect(() => validateProviders([{ ...provider, issuer: "not a url" }])).toThrow(AuthConfigError);
  expect(() => validateProviders([{ ...provider, issuer: "ftp://x.example.com" }])).toThrow(
    /scheme should be http or https/,
  );
});
