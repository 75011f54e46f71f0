/**
 * From a request to the function it names: the URL picks the endpoint
 * (`/api/query|mutation|action` with `path` in the body, or
 * `/api/run/<module>/<function>`), the module map says what the function is.
 */
import { HttpError, JsErrorMessage } from "./errors";

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

const KIND_NAME: Record<Kind, string> = { query: "Query", mutation: "Mutation", action: "Action" };

/**
 * "Could not find public function for 'mod:fn'." — what Convex answers, as a
 * failed call (HTTP 200, crates/udf/src/validation.rs `missing_or_internal_error`,
 * UDF_404_ON_BAD_PATH off by default), for a function that does not exist
 * and for an internal one called without an admin key alike.
 */
export function notFound(name: string): JsErrorMessage {
  return new JsErrorMessage(`Could not find public function for '${name}'.`);
}

/**
 * Resolves "mod/dir:fn" (".js" allowed, default export when no ":") to the
 * registered function, and checks the caller may run it as `expected`, in
 * Convex's order (`ValidatedPathAndArgs::new_inner`): visibility, then kind.
 * Failures are `JsErrorMessage`s (failed calls), as on Convex.
 */
export async function resolveFunction(
  modules: Modules,
  path: string,
  access: { admin: boolean; expected: Kind | null },
): Promise<ResolvedFunction> {
  const [modPath, fnName = "default"] = path.split(":");
  const mod = (modPath ?? "").replace(/\.(js|ts)$/, "");
  const name = `${mod}:${fnName}`;
  if (mod === "" || mod.startsWith("_") || mod.includes("..")) throw notFound(name);
  const loader = modules[`/convex/${mod}.ts`] ?? modules[`/convex/${mod}.js`];
  const fn = loader ? (await loader())[fnName] : undefined;
  if (fn === undefined || !(fn.isQuery || fn.isMutation || fn.isAction)) throw notFound(name);
  const kind: Kind = fn.isQuery ? "query" : fn.isMutation ? "mutation" : "action";
  const internal = Boolean(fn.isInternal);
  if (internal && !access.admin) throw notFound(name);
  if (access.expected !== null && access.expected !== kind) {
    throw new JsErrorMessage(
      `Trying to execute ${mod}.js:${fnName} as ${KIND_NAME[access.expected]}, but it is defined as ${KIND_NAME[kind]}.`,
    );
  }
  return { name, kind, internal };
}
