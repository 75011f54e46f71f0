/**
 * The 200 answer to a function call, byte for byte as the real backend
 * writes it: `UdfResponse` in crates/local_backend/src/public_api.rs is
 * `#[serde(tag = "status")]` with `logLines` skipped when empty, `value` the
 * exported return value and `errorData` the exported ConvexError data (same
 * format). Our functions log nothing to the caller, so `logLines` never appears.
 */
import type { FunctionErrorBody } from "./errors";
import { exportValue, type ValueFormat } from "./wire-json";

export type UdfResult = { status: "success"; value: unknown } | FunctionErrorBody;

export function encodeUdfResponse(result: UdfResult, format: ValueFormat): string {
  if (result.status === "success") {
    return `{"status":"success","value":${exportValue(result.value === undefined ? null : result.value, format)}}`;
  }
  const data = result.errorData === undefined ? "" : `,"errorData":${exportValue(result.errorData, format)}`;
  return `{"status":"error","errorMessage":${JSON.stringify(result.errorMessage)}${data}}`;
}
