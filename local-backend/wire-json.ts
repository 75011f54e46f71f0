/**
 * Convex values printed as the real backend prints them in HTTP API answers
 * (get-convex/convex-backend: crates/value/src/export.rs `ConvexValue::export`,
 * crates/value/src/json/mod.rs `SerializeValue`, crates/local_backend/src/
 * public_api.rs `export_value`). JSON.stringify differs in three ways that a
 * client parsing the answer can trip on:
 *  - a float64 is printed by serde_json, i.e. by `ryu` (`2` → `2.0`,
 *    `1e21` → `1e21`, `1e-7` → `1e-7`, `-0` → `-0.0`), so an integer-valued
 *    float is not a JSON integer;
 *  - object fields come out sorted (a Convex object is a BTreeMap keyed by
 *    field name, i.e. by UTF-8 bytes);
 *  - each format has its own encoding of int64, bytes and special floats.
 */
import { HttpError } from "./errors";

/** `ValueFormat` (crates/value/src/export.rs). */
export type ValueFormat = "convex_encoded_json" | "json" | "export_json";

/** The `format` field of a request, as `ValueFormat::from_str` reads it; null when absent. */
export function parseValueFormat(format: unknown): ValueFormat | null {
  if (format === undefined || format === null) return null;
  switch (format) {
    case "convex_encoded_json":
    case "convex_json": // legacy alias
      return "convex_encoded_json";
    case "json":
    case "convex_clean_json": // legacy alias
      return "json";
    case "export_json":
      return "export_json";
    default:
      throw new HttpError(400, "BadFormat", `format param must be one of [\`json\`]. Got ${String(format)}`);
  }
}

/**
 * The format when a request names none: `ClientVersion::default_format`
 * (crates/common/src/version.rs) gives clean JSON to every client except npm /
 * CLI <= 1.4.1 and Python <= 0.5.0, and to requests without a `Convex-Client`
 * header; `/api/run/…` defaults to clean JSON outright.
 */
export function defaultValueFormat(convexClient: string | undefined): ValueFormat {
  const m = /^(npm|cli|actions|python)-(\d+)\.(\d+)\.(\d+)/.exec(convexClient ?? "");
  if (!m) return "json";
  const v = [Number(m[2]), Number(m[3]), Number(m[4])];
  const threshold = m[1] === "python" ? [0, 5, 0] : [1, 4, 1];
  const above =
    v[0]! !== threshold[0]
      ? v[0]! > threshold[0]!
      : v[1] !== threshold[1]
        ? v[1]! > threshold[1]!
        : v[2]! > threshold[2]!;
  return above ? "json" : "convex_encoded_json";
}

/**
 * A finite float64 as serde_json 1.0.145 (the real backend's) prints it:
 * `ryu::Buffer::format_finite` (ryu 1.0.23, src/pretty/mod.rs `format64`).
 * The digits are the shortest that round-trip, which is also what
 * `Number.prototype.toExponential()` gives; only the layout differs.
 */
export function formatFloat64(x: number): string {
  if (!Number.isFinite(x)) throw new Error(`formatFloat64: ${x} is not finite`);
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const sign = x < 0 ? "-" : "";
  const [mantissa, exp] = Math.abs(x).toExponential().split("e") as [string, string];
  const digits = mantissa.replace(".", "");
  const length = digits.length;
  const kk = Number(exp) + 1; // 10^(kk-1) <= |x| < 10^kk
  const k = kk - length;
  let out: string;
  if (k >= 0 && kk <= 16) out = `${digits}${"0".repeat(kk - length)}.0`;
  else if (kk > 0 && kk <= 16) out = `${digits.slice(0, kk)}.${digits.slice(kk)}`;
  else if (kk > -5 && kk <= 0) out = `0.${"0".repeat(-kk)}${digits}`;
  else if (length === 1) out = `${digits}e${kk - 1}`;
  else out = `${digits[0]}.${digits.slice(1)}e${kk - 1}`;
  return sign + out;
}

function le64(write: (view: DataView) => void): string {
  const buf = new ArrayBuffer(8);
  write(new DataView(buf));
  return Buffer.from(buf).toString("base64");
}

/** UTF-8 byte order, as Rust's `str: Ord` (JS `<` compares UTF-16 units). */
function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

function isSpecialFloat(x: number): boolean {
  return !Number.isFinite(x) || Object.is(x, -0);
}

/** One Convex value (as convex-test hands it back: bigint, ArrayBuffer, plain objects) as JSON text. */
export function exportValue(value: unknown, format: ValueFormat): string {
  if (value === null) return "null";
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false";
    case "string":
      // serde_json and JSON.stringify escape the same characters the same way
      // (`"`, `\`, C0 controls; short forms \b \f \n \r \t; otherwise \u00xx).
      return JSON.stringify(value);
    case "bigint":
      if (format === "convex_encoded_json") return `{"$integer":"${le64((v) => v.setBigInt64(0, value, true))}"}`;
      if (format === "json") return `"${value.toString()}"`;
      return value.toString();
    case "number":
      if (format === "json") {
        if (Number.isNaN(value)) return '"NaN"';
        if (value === Infinity) return '"Infinity"';
        if (value === -Infinity) return '"-Infinity"';
        return formatFloat64(value);
      }
      if (format === "convex_encoded_json" ? isSpecialFloat(value) : !Number.isFinite(value)) {
        return `{"$float":"${le64((v) => v.setFloat64(0, value, true))}"}`;
      }
      return formatFloat64(value);
    case "object": {
      if (value instanceof ArrayBuffer) {
        const b64 = Buffer.from(value).toString("base64");
        return format === "json" ? `"${b64}"` : `{"$bytes":"${b64}"}`;
      }
      if (Array.isArray(value)) return `[${value.map((v) => exportValue(v, format)).join(",")}]`;
      const fields = Object.entries(value as Record<string, unknown>)
        .filter(([, v]) => v !== undefined)
        .sort(([a], [b]) => byteOrder(a, b));
      return `{${fields.map(([k, v]) => `${JSON.stringify(k)}:${exportValue(v, format)}`).join(",")}}`;
    }
    default:
      throw new Error(`not a Convex value: ${typeof value}`);
  }
}
