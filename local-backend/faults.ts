/**
 * Switchable fault injection (`/_faults`): a FIFO of faults, each consumed by
 * the next `count` function calls it matches, plus a set of keys whose
 * `projector:apply` writes are refused until `clear`.
 */
import { HttpError } from "./errors";

/** `path`, when set, limits a fault to calls of that function (e.g. "projector:apply"). */
export type Fault = { count: number; path?: string } & (
  | { kind: "status"; status: number; retryAfterSeconds?: number }
  | { kind: "latency"; ms: number }
  | { kind: "drop_before" }
  | { kind: "drop_after" }
  | { kind: "occ" }
);

export type RejectedWrite = { table: string; key: string };

export class FaultState {
  private faults: Fault[] = [];
  /** Keys whose `apply` writes are rejected definitively (fault `reject_key`). */
  private rejectKeys = new Set<string>();

  /** `onFault` is told each time a fault fires (for `/_stats`). */
  constructor(private readonly onFault: () => void) {}

  list(): Fault[] {
    return this.faults;
  }

  /** The first queued fault that matches a call of `path`, consumed once. */
  take(path: string): Fault | null {
    const f = this.faults.find((x) => x.count > 0 && (x.path === undefined || x.path === path));
    if (!f) return null;
    f.count--;
    this.faults = this.faults.filter((x) => x.count > 0);
    this.onFault();
    return f;
  }

  /** The first write of a `projector:apply` call whose key is rejected, if any. */
  rejectedWrite(name: string, args: any): RejectedWrite | null {
    if (name !== "projector:apply" || !Array.isArray(args?.writes) || this.rejectKeys.size === 0) return null;
    const w = args.writes.find((x: any) => x && this.rejectKeys.has(x.key));
    if (!w) return null;
    this.onFault();
    return { table: String(w.table), key: String(w.key) };
  }

  /** Applies one `POST /_faults` body; throws a 400 `HttpError` for a malformed one. */
  configure(f: any): void {
    const count = f?.count ?? 1;
    const okCount = Number.isSafeInteger(count) && count >= 1;
    if (f?.path !== undefined && typeof f.path !== "string")
      throw new HttpError(400, "BadRequest", "path must be a string");
    const path: string | undefined = f?.path?.replace(/\.js:/, ":");
    switch (f?.kind) {
      case "clear":
        this.faults = [];
        this.rejectKeys = new Set();
        break;
      case "reject_key":
        if (typeof f.key !== "string") throw new HttpError(400, "BadRequest", "reject_key fault needs a string key");
        this.rejectKeys.add(f.key);
        break;
      case "status":
        if (!okCount || !Number.isSafeInteger(f.status) || f.status < 400 || f.status > 599) {
          throw new HttpError(400, "BadRequest", "status fault needs status 400..599 and count >= 1");
        }
        this.faults.push({ kind: "status", status: f.status, count, path, retryAfterSeconds: f.retryAfterSeconds });
        break;
      case "latency":
        if (!okCount || typeof f.ms !== "number" || f.ms < 0) {
          throw new HttpError(400, "BadRequest", "latency fault needs ms >= 0 and count >= 1");
        }
        this.faults.push({ kind: "latency", ms: f.ms, count, path });
        break;
      case "drop_before":
      case "drop_after":
      case "occ":
        if (!okCount) throw new HttpError(400, "BadRequest", "count must be >= 1");
        this.faults.push({ kind: f.kind, count, path });
        break;
      default:
        throw new HttpError(
          400,
          "BadRequest",
          "kind must be status|latency|drop_before|drop_after|occ|reject_key|clear",
        );
    }
  }
}
