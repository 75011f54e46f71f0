// @vitest-environment node
// Values printed as the real backend prints them (wire-json.ts).
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { expect, test } from "vitest";
import { defaultValueFormat, exportValue, formatFloat64, parseValueFormat } from "./wire-json";

const here = dirname(fileURLToPath(import.meta.url));

test("float64 layout matches ryu 1.0.23 (the real backend's serde_json) on 600+ values", () => {
  const lines = readFileSync(join(here, "testdata", "ryu-1.0.23.txt"), "utf8")
    .trim()
    .split("\n");
  expect(lines.length).toBeGreaterThan(600);
  const view = new DataView(new ArrayBuffer(8));
  for (const line of lines) {
    const [bits, expected] = line.split(" ") as [string, string];
    view.setBigUint64(0, BigInt(`0x${bits}`));
    const x = view.getFloat64(0);
    expect(formatFloat64(x), `bits ${bits}`).toBe(expected);
  }
});

test("clean JSON (format json): int64 as decimal strings, floats with a fraction, specials as strings", () => {
  const v = {
    int: 5n,
    neg: -9223372036854775808n,
    two: 2,
    tenth: 0.1,
    big: 1e21,
    small: 1e-7,
    negZero: -0,
    nan: NaN,
    inf: Infinity,
    ninf: -Infinity,
    bytes: new Uint8Array([0, 16, 131]).buffer,
    nested: [1, { b: true, a: null }],
    gone: undefined,
  };
  expect(exportValue(v, "json")).toBe(
    '{"big":1e21,"bytes":"ABCD","inf":"Infinity","int":"5","nan":"NaN","neg":"-9223372036854775808",' +
      '"negZero":-0.0,"nested":[1.0,{"a":null,"b":true}],"ninf":"-Infinity","small":1e-7,"tenth":0.1,"two":2.0}',
  );
});

test("convex encoded JSON: $integer, $float for -0/NaN/inf only, $bytes", () => {
  expect(exportValue({ i: 5n, f: 2, z: -0, n: NaN, b: new Uint8Array([1]).buffer }, "convex_encoded_json")).toBe(
    '{"b":{"$bytes":"AQ=="},"f":2.0,"i":{"$integer":"BQAAAAAAAAA="},"n":{"$float":"AAAAAAAA+H8="},"z":{"$float":"AAAAAAAAAIA="}}',
  );
});

test("export JSON: int64 as a bare number, -0 finite, non-finite as $float", () => {
  expect(exportValue([5n, -0, Infinity, new Uint8Array([1]).buffer], "export_json")).toBe(
    '[5,-0.0,{"$float":"AAAAAAAA8H8="},{"$bytes":"AQ=="}]',
  );
});

test("object fields sort by UTF-8 bytes, as a Rust BTreeMap<String, _>", () => {
  expect(exportValue({ é: 1, a: 1, Z: 1, "\u{1F600}": 1, "\uFF5E": 1 }, "json")).toBe(
    '{"Z":1.0,"a":1.0,"é":1.0,"～":1.0,"😀":1.0}',
  );
  // Where UTF-16 and UTF-8 disagree: U+FFFD (one unit, EF BF BD) vs U+10000 (surrogates D800.., F0 90 80 80).
  expect(exportValue({ "\u{10000}": 1, "\uFFFD": 1 }, "json")).toBe('{"\uFFFD":1.0,"\u{10000}":1.0}');
});

test("format names and defaults as ValueFormat::from_str and ClientVersion::default_format", () => {
  expect(parseValueFormat("json")).toBe("json");
  expect(parseValueFormat("convex_clean_json")).toBe("json");
  expect(parseValueFormat("convex_encoded_json")).toBe("convex_encoded_json");
  expect(parseValueFormat("convex_json")).toBe("convex_encoded_json");
  expect(parseValueFormat(undefined)).toBeNull();
  expect(() => parseValueFormat("xml")).toThrow(/format param must be one of \[`json`\]. Got xml/);
  expect(defaultValueFormat(undefined)).toBe("json");
  expect(defaultValueFormat("rust-0.1.0")).toBe("json");
  expect(defaultValueFormat("npm-1.48.0")).toBe("json");
  expect(defaultValueFormat("npm-1.4.1")).toBe("convex_encoded_json");
  expect(defaultValueFormat("python-0.5.0")).toBe("convex_encoded_json");
  expect(defaultValueFormat("python-0.5.1")).toBe("json");
});
