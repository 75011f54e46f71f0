/**
 * Runtime check of a value against a Convex validator, returning the path and
 * reason of the first mismatch. `convex/values` does not export a validator
 * runner, and `apply` must reject a bad document with an error that names
 * its table, key and field (the arguments are `v.any()` per document so the
 * whole batch is not rejected with an opaque argument error).
 */
import type { GenericValidator } from "convex/values";

export function checkValue(validator: GenericValidator, value: unknown, path = ""): string | null {
  const at = path === "" ? "document" : path;
  const val = validator as any;
  switch (val.kind) {
    case "any":
      return value === undefined ? `${at}: missing` : null;
    case "null":
      return value === null ? null : `${at}: expected null, got ${describe(value)}`;
    case "string":
      return typeof value === "string" ? null : `${at}: expected string, got ${describe(value)}`;
    case "boolean":
      return typeof value === "boolean" ? null : `${at}: expected boolean, got ${describe(value)}`;
    case "float64":
      return typeof value === "number" ? null : `${at}: expected number, got ${describe(value)}`;
    case "int64":
      return typeof value === "bigint" ? null : `${at}: expected int64, got ${describe(value)}`;
    case "bytes":
      return value instanceof ArrayBuffer ? null : `${at}: expected bytes, got ${describe(value)}`;
    case "id":
      return typeof value === "string" ? null : `${at}: expected id, got ${describe(value)}`;
    case "literal":
      return value === val.value
        ? null
        : `${at}: expected ${JSON.stringify(val.value)}, got ${describe(value)}`;
    case "array": {
      if (!Array.isArray(value)) return `${at}: expected array, got ${describe(value)}`;
      for (let i = 0; i < value.length; i++) {
        const e = checkValue(val.element, value[i], `${path}[${i}]`);
        if (e) return e;
      }
      return null;
    }
    case "record": {
      if (!isPlainObject(value)) return `${at}: expected object, got ${describe(value)}`;
      for (const [k, x] of Object.entries(value)) {
        const e = checkValue(val.value, x, join(path, k));
        if (e) return e;
      }
      return null;
    }
    case "object": {
      if (!isPlainObject(value)) return `${at}: expected object, got ${describe(value)}`;
      const fields = val.fields as Record<string, GenericValidator>;
      for (const [k, fv] of Object.entries(fields)) {
        const x = (value as Record<string, unknown>)[k];
        if (x === undefined) {
          if ((fv as any).isOptional === "optional") continue;
          const nullable = (fv as any).kind === "union" && (fv as any).members.some((m: any) => m.kind === "null");
          return `${join(path, k)}: missing${nullable ? " (nullable fields must be null, not absent)" : ""}`;
        }
        const e = checkValue(fv, x, join(path, k));
        if (e) return e;
      }
      for (const k of Object.keys(value)) {
        if (!(k in fields)) return `${join(path, k)}: unexpected field`;
      }
      return null;
    }
    case "union": {
      for (const m of val.members as GenericValidator[]) {
        if (checkValue(m, value, path) === null) return null;
      }
      return `${at}: ${describe(value)} matches none of the allowed types`;
    }
    default:
      return `${at}: unsupported validator kind ${String(val.kind)}`;
  }
}

function join(path: string, k: string) {
  return path === "" ? k : `${path}.${k}`;
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x) && !(x instanceof ArrayBuffer);
}

function describe(x: unknown): string {
  if (x === null) return "null";
  if (Array.isArray(x)) return "array";
  if (typeof x === "string") return `string ${JSON.stringify(x.length > 40 ? x.slice(0, 40) + "…" : x)}`;
  if (typeof x === "number" || typeof x === "boolean" || typeof x === "bigint") return `${typeof x} ${String(x)}`;
  return typeof x;
}
