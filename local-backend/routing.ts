/**
 * From a request to the function it names: the URL picks the endpoint
 * (`/api/query|mutation|action` with `path` in the body, or
 * `/api/run/<module>/<function>`), the module map says what the function is.
 */
import { HttpError } from "./errors";

export type Kind = "query" | "mutation" | "action";

export type Modules = Record<string, () => Promise<any>>;

export type ResolvedFunction = { name: string; kind: Kind; internal: boolean };

/**
 * The function path a `/api/*` URL names, and the kind the endpoint demands
 * (null for `/api/run/…`, which takes any kind).
 */
export function routeApi(pathname: string, body: { path?: unknown }): { path: string; expected: Kind | null } {
  const m = /^\/api\/(query|mutation|action)$/.exec(pathname);
  if (m) {
    if (typeof body.path !== "string") throw new HttpError(400, "BadRequest", "Missing `path`");
    return { path: body.path, expected: m[1] as Kind };
  }
  if (pathname.startsWith("/api/run/")) {
    const segs = pathname.slice("/api/run/".length).split("/").filter(Boolean).map(decodeURIComponent);
    if (segs.length < 2) throw new HttpError(404, "FunctionNotFound", "Use /api/run/<module>/<function>");
    return { path: `${segs.slice(0, -1).join("/")}:${segs[segs.length - 1]}`, expected: null };
  }
  throw new HttpError(404, "NotFound", `No route ${pathname}`);
}

/** Resolve "mod/dir:fn" (".js" allowed, default export when no ":") to the registered function. */
export async function resolveFunction(modules: Modules, path: string): Promise<ResolvedFunction> {
  const [modPath, fnName = "default"] = path.split(":");
  const mod = (modPath ?? "").replace(/\.(js|ts)$/, "");
  if (mod === "" || mod.startsWith("_") || mod.includes("..")) {
    throw new HttpError(404, "FunctionNotFound", `Could not find function for '${path}'`);
  }
  const loader = modules[`/convex/${mod}.ts`] ?? modules[`/convex/${mod}.js`];
  const fn = loader ? (await loader())[fnName] : undefined;
  if (fn === undefined || !(fn.isQuery || fn.isMutation || fn.isAction)) {
    throw new HttpError(404, "FunctionNotFound", `Could not find function for '${path}'`);
  }
  const kind: Kind = fn.isQuery ? "query" : fn.isMutation ? "mutation" : "action";
  return { name: `${mod}:${fnName}`, kind, internal: Boolean(fn.isInternal) };
}
