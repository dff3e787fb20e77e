// What the browser walks share: their environment variables, headless Chromium in a fresh
// profile (playwright-core), screenshots, and the step/check/failure reporting.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

// The value of environment variable `name`; exits 2 when it is not set.
export const need = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`${process.argv[1]}: ${name} is not set`);
    process.exit(2);
  }
  return value;
};

export class Failure extends Error {}
export function check(condition, message) {
  if (!condition) throw new Failure(message);
}
export function step(message) {
  console.log(`ok: ${message}`);
}

// Chromium (CHROMIUM, default /usr/bin/chromium) in a fresh profile, with its first page and
// `shot(name)`, a full-page screenshot into `out`. `options` are further context options
// (e.g. `locale`, which sets the Accept-Language Chromium sends).
export async function openBrowser(out, options = {}) {
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  const profile = mkdtempSync(join(tmpdir(), 'hti-guard-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1000, height: 900 },
    ...options,
  });
  context.setDefaultTimeout(15_000);
  const page = context.pages()[0] ?? (await context.newPage());
  const shot = async (name) => {
    const path = join(out, name);
    await page.screenshot({ path, fullPage: true });
    console.log(`screenshot: ${path}`);
  };
  const close = async () => {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  };
  return { context, page, shot, close };
}

// Runs `walk`; on a failure prints it (with where the page was and `detail()`) and takes
// failure.png. Closes the browser and exits 0 or 1.
export async function run({ page, shot, close }, walk, detail = () => '') {
  let failed = false;
  try {
    await walk();
  } catch (error) {
    failed = true;
    console.error(`FAILED: ${error instanceof Failure ? error.message : error.stack}`);
    console.error(`at ${page.url()}${detail()}`);
    await shot('failure.png').catch(() => {});
  } finally {
    await close();
  }
  process.exit(failed ? 1 : 0);
}
