import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // convex/*.test.ts pick the edge-runtime environment per file (as Convex runs);
    // local-backend tests run in node.
    include: ["convex/**/*.test.ts", "local-backend/**/*.test.ts", "web/**/*.test.ts"],
    server: { deps: { inline: ["convex-test"] } },
    testTimeout: 30000,
  },
});
