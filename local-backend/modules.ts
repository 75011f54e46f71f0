/**
 * The module map convex-test needs (what `import.meta.glob("../convex/**")`
 * would give under Vite): every function module in `convex/` plus the
 * `convex/_generated/*` files, which convex-test uses to find the root.
 * Built by listing the directory so new modules need no edit here.
 */
import { readdirSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

export const convexDir = join(dirname(fileURLToPath(import.meta.url)), "..", "convex");

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      if (e.name !== "node_modules") out.push(...walk(p));
    } else if (/\.(ts|js)$/.test(e.name) && (e.name.split(".").length === 2 || dir.endsWith("_generated")) && !e.name.endsWith(".d.ts")) {
      // Like the Convex bundler: names with several dots (tests, test setup,
      // auth.config) are not function modules; `_generated/*.js` are needed.
      out.push(p);
    }
  }
  return out;
}

export function convexModules(): Record<string, () => Promise<any>> {
  const map: Record<string, () => Promise<any>> = {};
  for (const file of walk(convexDir)) {
    const key = "/convex/" + relative(convexDir, file).split("\\").join("/");
    const url = pathToFileURL(file).href;
    // convex-test loads the module on every call: import once. (A repeated
    // dynamic import still goes through the loader's resolve hook, ~ms each
    // under tsx, which dominated a short query.)
    let loaded: Promise<any> | undefined;
    map[key] = () => (loaded ??= import(url));
  }
  return map;
}
