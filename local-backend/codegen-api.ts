/**
 * Writes the typed `convex/_generated/api.d.ts` with the Convex CLI's own
 * template. `npx convex codegen` without a reachable deployment stops after
 * writing an untyped stub (`api: AnyApi`); this completes it offline.
 * `npx convex dev|deploy` regenerates the same file from the deployment.
 */
import { readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
// @ts-ignore -- internal module of the convex CLI, no type declarations.
import { apiCodegen } from "../node_modules/convex/dist/esm/cli/codegen_templates/api.js";
import { convexDir } from "./modules";

function modulePaths(dir: string, prefix = ""): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    if (e.isDirectory()) {
      if (e.name !== "_generated" && e.name !== "node_modules") out.push(...modulePaths(join(dir, e.name), `${prefix}${e.name}/`));
      continue;
    }
    // Same skips as the Convex bundler: non-TS/JS, several dots, schema, dotfiles.
    if (!/\.(ts|tsx|js|jsx)$/.test(e.name) || e.name.split(".").length > 2 || e.name.startsWith(".")) continue;
    if (prefix === "" && /^schema\.(ts|js)$/.test(e.name)) continue;
    out.push(prefix + e.name);
  }
  return out;
}

const paths = modulePaths(convexDir);
const { DTS } = apiCodegen(paths, { useTypeScript: false });
writeFileSync(join(convexDir, "_generated", "api.d.ts"), DTS);
console.log(`wrote convex/_generated/api.d.ts for ${paths.length} modules: ${paths.join(", ")}`);
