/**
 * Screenshot of a page in Debian's headless Chromium (playwright-core), after
 * it has redrawn `--updates` times (default 1): `tsx web/screenshot.ts <url> <out.png> [--updates N]`.
 * Used to capture the demo's live page while traffic flows.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, out] = process.argv.slice(2);
const i = process.argv.indexOf("--updates");
const updates = i >= 0 ? Number(process.argv[i + 1]) : 1;
if (!url || !out) {
  console.error("usage: screenshot <url> <out.png> [--updates N]");
  process.exit(2);
}
const profile = mkdtempSync(join(tmpdir(), "projector-chromium-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1100, height: 900 },
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
try {
  const page = await browser.newPage();
  await page.goto(url);
  await page.waitForFunction((n) => Number(document.body.dataset.updates ?? 0) >= n, updates, { timeout: 120_000 });
  await page.screenshot({ path: out, fullPage: true });
  console.log(`wrote ${out} after ${await page.evaluate(() => document.body.dataset.updates)} updates`);
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
