/**
 * The read set's intervals as the real backend counts them
 * (crates/database/src/reads.rs `TransactionReadSet`): per index, a set of
 * disjoint intervals of index keys in which overlapping or touching
 * intervals merge, so reading a range again, or a point inside a range
 * already read, costs nothing more. The limit (4096) is on the sum of the
 * sets' sizes.
 *
 * Index keys are tuples of Convex values (the index fields, then
 * _creationTime, _id), ordered by `compareValues`. A bound is a tuple plus a
 * side: `(P, -1)` is just before every key starting with P, `(P, +1)` just
 * after them all, so a prefix P is the interval [(P,-1), (P,+1)).
 */
import { compareValues, type Value } from "convex/values";

export type Bound = { key: (Value | undefined)[]; side: -1 | 1 };
export type Interval = { lo: Bound; hi: Bound };

export function compareBounds(a: Bound, b: Bound): number {
  const n = Math.min(a.key.length, b.key.length);
  for (let i = 0; i < n; i++) {
    const c = compareValues(a.key[i], b.key[i]);
    if (c !== 0) return c;
  }
  if (a.key.length === b.key.length) return a.side - b.side;
  // One key is a prefix of the other: the shorter one's side decides.
  return a.key.length < b.key.length ? a.side : -b.side;
}

export const prefixInterval = (key: (Value | undefined)[]): Interval => ({
  lo: { key, side: -1 },
  hi: { key, side: 1 },
});

/** Disjoint, non-touching intervals sorted by `lo`. */
export class IntervalSet {
  private items: Interval[] = [];

  get size(): number {
    return this.items.length;
  }

  add(iv: Interval): void {
    if (compareBounds(iv.lo, iv.hi) >= 0) return; // empty
    // First interval that ends at or after iv starts (touching counts).
    let lo = 0;
    let hi = this.items.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (compareBounds(this.items[mid]!.hi, iv.lo) < 0) lo = mid + 1;
      else hi = mid;
    }
    let end = lo;
    let merged = iv;
    while (end < this.items.length && compareBounds(this.items[end]!.lo, iv.hi) <= 0) {
      const e = this.items[end]!;
      merged = {
        lo: compareBounds(e.lo, merged.lo) < 0 ? e.lo : merged.lo,
        hi: compareBounds(e.hi, merged.hi) > 0 ? e.hi : merged.hi,
      };
      end++;
    }
    this.items.splice(lo, end - lo, merged);
  }
}
