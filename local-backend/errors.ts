/**
 * Convex's error answers. Two families, as on the real backend:
 * - a request the backend refuses before running anything (bad auth, unknown
 *   function, bad JSON, injected overload) is a non-2xx `{code, message}`;
 * - a function that ran and threw is HTTP 200
 *   `{status:"error", errorMessage:"[Request ID: …] Server Error\nUncaught <Name>: …\n", errorData?}`
 *   (udf-response.ts prints it).
 */
import { randomBytes } from "node:crypto";

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

/** A function's failure; `errorData` is the ConvexError's data as a Convex value. */
export type FunctionErrorBody = {
  status: "error";
  errorMessage: string;
  errorData?: unknown;
};

/**
 * `errorMessage` as the real backend writes it: `RedactedJsError`'s Display
 * (crates/application/src/redaction.rs) is `[Request ID: <16 hex>] Server
 * Error` then, unless logging is blocked, a newline and the `JsError`
 * (crates/common/src/errors.rs: its message, a newline, the stack frames).
 * The message of a throw is `Uncaught <name>: <message>`
 * (crates/isolate/src/helpers.rs `format_uncaught_error`); an argument that
 * fails its validator is `ArgumentValidationError: …` with no "Uncaught"
 * (crates/udf/src/validation.rs). We print no frames (Convex omits them too
 * when it has none); the validator detail is convex-test's wording.
 */
export function serverErrorMessage(jsMessage: string): string {
  return `[Request ID: ${randomBytes(8).toString("hex")}] Server Error\n${jsMessage}\n`;
}

/**
 * A failure the real backend reports with its own message, not as a throw
 * from the function (no "Uncaught …:" prefix): bad or oversized arguments, an
 * invalid or oversized return value.
 */
export class JsErrorMessage extends Error {}

/** The 200 answer for a function that threw `e`. */
export function functionError(e: unknown): FunctionErrorBody {
  if (e instanceof JsErrorMessage) return { status: "error", errorMessage: serverErrorMessage(e.message) };
  const err = e as any;
  const isConvexError =
    err !== null && typeof err === "object" && Symbol.for("ConvexError") in err && err[Symbol.for("ConvexError")];
  const msg: string = err?.message ?? String(e);
  // convex-test validates arguments inside the call; Convex does it before
  // running the function, and says so without "Uncaught".
  if (!isConvexError && (msg.startsWith("Validator error") || msg.startsWith("ArgumentValidationError"))) {
    return {
      status: "error",
      errorMessage: serverErrorMessage(`ArgumentValidationError: ${msg.replace(/^ArgumentValidationError: /, "")}`),
    };
  }
  const name = isConvexError ? "ConvexError" : (err?.name ?? "Error");
  const body: FunctionErrorBody = { status: "error", errorMessage: serverErrorMessage(`Uncaught ${name}: ${msg}`) };
  if (isConvexError && err.data !== undefined) body.errorData = err.data;
  return body;
}

/** The answer to an injected `status` fault: what Convex sends when it sheds load or fails. */
export function injectedStatus(status: number, retryAfterSeconds?: number): HttpError {
  const code =
    status === 429
      ? "RateLimited"
      : status === 503
        ? "Overloaded"
        : status === 500
          ? "InternalServerError"
          : "InjectedFault";
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
    errorMessage: serverErrorMessage(`Uncaught ConvexError: ${message}`),
    errorData: { code: "InvalidDocument", message, table, key },
  };
}

/**
 * What Convex answers when a mutation kept conflicting with concurrent
 * writes through its internal retries (UDF_EXECUTOR_OCC_MAX_RETRIES = 4):
 * ErrorCode::OCC is HTTP 503 with code `OptimisticConcurrencyControlFailure`
 * (crates/errors/src/lib.rs `OCC_ERROR`, `OCC_ERROR_MSG`). Nothing committed.
 */
export function occFailure(): HttpError {
  return new HttpError(
    503,
    "OptimisticConcurrencyControlFailure",
    "Data read or written in this mutation changed while it was being run. Consider reducing the amount of data " +
      "read by using indexed queries with selective index range expressions (https://docs.convex.dev/database/indexes/).",
  );
}
