/**
 * Byte counts in the two notations the real backend's limit errors use.
 */

/**
 * humansize 2.1.3 `format_size(BINARY)` (the real backend's Cargo.lock): `n B`
 * below 1 KiB; else the largest of KiB/MiB/GiB/TiB not above n, printed
 * without decimals when whole and with two (round half to even, as Rust's
 * `{:.2}`) otherwise: 1048576 → "1 MiB", 1048577 → "1.00 MiB", 1100000 → "1.05 MiB".
 */
export function humanSizeBinary(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let k = 0;
  while (k + 1 < units.length && n >= 1024 ** (k + 1)) k++;
  if (k === 0) return `${n} B`;
  const d = 1024n ** BigInt(k);
  const big = BigInt(n);
  if (big % d === 0n) return `${big / d} ${units[k]}`;
  const scaled = big * 100n;
  let q = scaled / d;
  const r = scaled % d;
  if (2n * r > d || (2n * r === d && q % 2n === 1n)) q++;
  return `${q / 100n}.${String(q % 100n).padStart(2, "0")} ${units[k]}`;
}

/**
 * `common::fmt::format_bytes` (crates/common/src/fmt.rs): the first of
 * GiB, GB, MiB, MB, KiB, KB that divides n exactly (or to one decimal), else bytes.
 */
export function formatBytes(n: number): string {
  if (n === 0) return "0 bytes";
  const units: [number, string][] = [
    [2 ** 30, "GiB"],
    [1e9, "GB"],
    [2 ** 20, "MiB"],
    [1e6, "MB"],
    [2 ** 10, "KiB"],
    [1e3, "KB"],
  ];
  for (const [size, name] of units) {
    if (n < size) continue;
    if (n % size === 0) return `${n / size} ${name}`;
    if ((n * 10) % size === 0) return `${Math.floor(n / size)}.${Math.floor((n * 10) / size) % 10} ${name}`;
  }
  return `${n} bytes`;
}
