/**
 * Convex's error answers. Two families, as on the real backend:
 * - a request the backend refuses before running anything (bad auth, unknown
 *   function, bad JSON, injected overload) is a non-2xx `{code, message}`;
 * - a function that ran and threw is HTTP 200
 *   `{status:"error", errorMessage:"Uncaught <Name>: …", errorData?, logLines}`.
 */
import { convexToJson } from "convex/values";

/** A refusal answered as a non-2xx `{code, message}`. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export type FunctionErrorBody = {
  status: "error";
  errorMessage: string;
  errorData?: unknown;
  logLines: string[];
};

/** The 200 answer for a function that threw `e`. */
export function functionError(e: unknown): FunctionErrorBody {
  const err = e as any;
  const isConvexError =
    err !== null && typeof err === "object" && Symbol.for("ConvexError") in err && err[Symbol.for("ConvexError")];
  const msg: string = err?.message ?? String(e);
  // Argument validation fails inside the function on Convex too (HTTP 200, status "error").
  const name = isConvexError
    ? "ConvexError"
    : msg.startsWith("Validator error") || msg.startsWith("ArgumentValidationError")
      ? "ArgumentValidationError"
      : (err?.name ?? "Error");
  const body: FunctionErrorBody = { status: "error", errorMessage: `Uncaught ${name}: ${msg}`, logLines: [] };
  if (isConvexError && err.data !== undefined) body.errorData = convexToJson(err.data);
  return body;
}

/** The answer to an injected `status` fault: what Convex sends when it sheds load or fails. */
export function injectedStatus(status: number, retryAfterSeconds?: number): HttpError {
  const code =
    status === 429 ? "RateLimited" : status === 503 ? "Overloaded" : status === 500 ? "InternalServerError" : "InjectedFault";
  const message =
    status === 429
      ? "Rate limited: too many concurrent requests (injected fault)"
      : status === 503
        ? "Service temporarily unavailable: overloaded (injected fault)"
        : `Injected fault with status ${status}`;
  const headers: Record<string, string> = {};
  if (status === 429 || retryAfterSeconds !== undefined) headers["retry-after"] = String(retryAfterSeconds ?? 1);
  return new HttpError(status, code, message, headers);
}

/** The answer to an `apply` that hit an injected `reject_key`: a document Convex refuses. */
export function rejectedDocument(table: string, key: string): FunctionErrorBody {
  const message = `${table} key ${JSON.stringify(key)}: rejected (injected fault reject_key)`;
  return {
    status: "error",
    errorMessage: `Uncaught ConvexError: ${message}`,
    errorData: { code: "InvalidDocument", message, table, key },
    logLines: [],
  };
}
