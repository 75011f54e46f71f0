// @vitest-environment node
// The live page in Debian's headless Chromium (driven by playwright-core):
// it subscribes with the official client and a token from the demo app
// backend, shows only its user's documents, and redraws after a commit.
// Leaves a screenshot in test-artifacts/live-page.png.
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium, type BrowserContext } from "playwright-core";
import { afterAll, beforeAll, expect, test } from "vitest";
import { inbox, pos, run, worker } from "../convex/fixtures.test-helpers";
import { createVerifier, providersFromAuthConfig } from "../local-backend/jwt";
import { bearerVerifier, enableLiveClients, type LiveClients } from "../local-backend/live";
import { convexModules } from "../local-backend/modules";
import { startBackend, type Backend } from "../local-backend/server";
import type { IssuerServer } from "../tools/token-issuer";
import { startDemoWeb } from "./server";

const CHROMIUM = "/usr/bin/chromium";
const ADMIN = "page-test-admin-key";
const artifacts = join(dirname(fileURLToPath(import.meta.url)), "..", "test-artifacts");
let web: IssuerServer;
let backend: Backend;
let live: LiveClients;
let browser: BrowserContext;
let profile: string;
let lsn = 100;

beforeAll(async () => {
  if (!existsSync(CHROMIUM))
    throw new Error(`${CHROMIUM} is missing: apt-get install chromium (scripts/setup.sh does it)`);
  web = await startDemoWeb();
  process.env.JWT_ISSUER = web.issuer;
  process.env.JWT_JWKS_URL = web.jwksUrl;
  process.env.JWT_APPLICATION_ID = web.audience;
  const verifier = createVerifier({ providers: await providersFromAuthConfig() });
  backend = await startBackend({ port: 0, adminKey: ADMIN, verifyBearer: bearerVerifier(verifier) });
  live = enableLiveClients(backend, { verifier, modules: convexModules() });
  await apply([
    {
      table: "runs",
      key: "r-alice-1",
      doc: run("r-alice-1", "alice", { title: "index the repo", status: "running", stepCount: 2 }),
    },
    { table: "runs", key: "r-bob-1", doc: run("r-bob-1", "bob", { title: "bob's secret run" }) },
    { table: "workers", key: "w-alice-1", doc: { ...worker("w-alice-1", "alice"), status: "running", host: "host-7" } },
    { table: "inboxes", key: "alice", doc: inbox("alice") },
  ]);
  await admin("projector:setActive", { generation: 1, expected: null });
  profile = mkdtempSync(join(tmpdir(), "projector-chromium-"));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1100, height: 620 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
  live?.sync.close();
  await backend?.close();
  await web?.close();
});

async function admin(path: string, args: unknown) {
  const res = await fetch(`${backend.url}/api/mutation`, {
    method: "POST",
    headers: { authorization: `Convex ${ADMIN}`, "content-type": "application/json" },
    body: JSON.stringify({ path, args, format: "json" }),
  });
  const body = await res.json();
  expect(body.status, JSON.stringify(body)).toBe("success");
}

async function apply(writes: { table: string; key: string; doc: Record<string, unknown> }[]) {
  lsn++;
  await admin("projector:apply", {
    generation: 1,
    writes: writes.map((w, i) => ({ ...w, position: pos(lsn, i) })),
    deadLetters: [],
  });
}

test("the page shows alice's read model and redraws after a commit", async () => {
  const page = await browser.newPage();
  const consoleErrors: string[] = [];
  page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
  await page.goto(`${web.issuer}/?convex=${encodeURIComponent(backend.url)}&user=alice`);

  const runRow = page.locator('#runs tr[data-key="r-alice-1"]');
  await runRow.waitFor({ timeout: 20_000 });
  expect(await runRow.locator("td").allTextContents()).toEqual([
    "r-alice-1",
    "index the repo",
    "running",
    "2",
    "0 / 0",
    "1",
    "run.created",
  ]);
  expect(await page.locator("#workers tr[data-key]").allTextContents()).toEqual([
    "w-alice-1runninghost-70worker.requested",
  ]);
  expect(await page.locator("#inbox li").allTextContents()).toEqual(["hi"]);
  expect(await page.locator("#auth").textContent()).toBe("auth: alice");
  // Bob's run exists but is not alice's.
  expect(await page.locator('tr[data-key="r-bob-1"]').count()).toBe(0);
  expect(await page.locator("#runs tr[data-key]").count()).toBe(1);

  // A commit: the run moves on and a second one starts.
  const updatesBefore = Number(await page.evaluate(() => document.body.dataset.updates));
  await apply([
    {
      table: "runs",
      key: "r-alice-1",
      doc: run("r-alice-1", "alice", {
        title: "index the repo",
        status: "completed",
        stepCount: 5,
        eventCount: 7,
        lastEventType: "run.completed",
      }),
    },
    { table: "runs", key: "r-alice-2", doc: run("r-alice-2", "alice", { title: "write the summary" }) },
  ]);
  await page
    .locator('#runs tr[data-key="r-alice-1"] td:nth-child(3)', { hasText: "completed" })
    .waitFor({ timeout: 10_000 });
  expect(await page.locator("#runs tr[data-key]").count()).toBe(2);
  expect(await page.locator('#runs tr[data-key="r-alice-1"] td').nth(3).textContent()).toBe("5");
  expect(Number(await page.evaluate(() => document.body.dataset.updates))).toBeGreaterThan(updatesBefore);
  expect(await page.locator("#conn").textContent()).toBe("connected");
  expect(consoleErrors).toEqual([]);

  mkdirSync(artifacts, { recursive: true });
  await page.screenshot({ path: join(artifacts, "live-page.png"), fullPage: true });
}, 60_000);
