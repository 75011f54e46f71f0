// @vitest-environment node
// The worked examples' expected documents (tests/vectors/projections.json)
// must pass the validators `projector:apply` enforces, so the reducers'
// output shape and the schema cannot drift apart.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { expect, test } from "vitest";
import { checkValue } from "./check";
import { deadLetterDoc, docValidators } from "./validators";

const file = join(dirname(fileURLToPath(import.meta.url)), "..", "tests", "vectors", "projections.json");

test.skipIf(!existsSync(file))("every expected document of the vectors passes the table validator", () => {
  const vectors = JSON.parse(readFileSync(file, "utf8"));
  let checked = 0;
  for (const c of vectors.cases) {
    for (const [table, docs] of Object.entries<any>(c.expected)) {
      if (typeof docs !== "object" || docs === null) continue;
      for (const [key, doc] of Object.entries<any>(docs)) {
        if (table === "deadLetters") {
          // The vectors list only the compared fields; fill the rest.
          const full = { reason: "r", payload: "{}", ...doc };
          expect(checkValue(deadLetterDoc, full), `${c.name} deadLetters ${key}`).toBeNull();
        } else if (table in docValidators) {
          // threads also carry latestRunSeq, which the vectors do not list.
          const full = table === "threads" ? { latestRunSeq: 1, ...doc } : doc;
          const err = checkValue(docValidators[table as keyof typeof docValidators], full);
          expect(err, `${c.name} ${table} ${key}`).toBeNull();
        } else {
          throw new Error(`case ${c.name}: unknown table ${table}`);
        }
        checked++;
      }
    }
  }
  expect(checked).toBeGreaterThan(10);
});
