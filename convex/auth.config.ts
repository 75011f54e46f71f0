/**
 * Client authentication: the app backend mints short-lived RS256 JWTs that
 * Convex verifies against the issuer's JWKS (design.md §5). Set on the
 * deployment: JWT_ISSUER, JWT_JWKS_URL, JWT_APPLICATION_ID (the `aud`).
 */
import type { AuthConfig } from "convex/server";

export default {
  providers: [
    {
      type: "customJwt",
      issuer: process.env.JWT_ISSUER!,
      jwks: process.env.JWT_JWKS_URL!,
      applicationID: process.env.JWT_APPLICATION_ID!,
      algorithm: "RS256",
    },
  ],
} satisfies AuthConfig;
