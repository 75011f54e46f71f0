import { describe, expect, test } from "vitest";
import schema from "./schema";
import { TABLES } from "./tables";
import { writableTables } from "./validators";

describe("the table list", () => {
  test("names exactly the schema's tables", () => {
    expect(Object.keys(schema.tables).sort()).toEqual([...TABLES].sort());
  });
  test("holds every writable projection table", () => {
    for (const t of writableTables) expect(TABLES).toContain(t);
  });
});
