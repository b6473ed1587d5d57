// Shared by the browser scripts: arguments from the environment, and
// Debian's Chromium launched through playwright-core with a page that
// collects script errors.
import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

export function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

export function step(text) {
  process.stderr.write(`ui: ${text}\n`);
}

// Generous: a busy CI machine, not a latency bound.
export const PATIENCE = 60_000;

/**
 * Runs `body(page)` in a fresh browser; fails on script errors and on
 * failed requests other than the `expected` statuses (refusals the test
 * provokes on purpose; the browser logs each of them).
 */
export async function withPage(body, { expected = [401, 403] } = {}) {
  const { chromium } = createRequire(join(env("PLAYWRIGHT_DIR"), "package.json"))("playwright-core");
  mkdirSync(env("SCREENSHOTS"), { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    // Root in a container has no user namespaces for Chromium's sandbox.
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    const page = await context.newPage();
    page.setDefaultTimeout(PATIENCE);
    const problems = [];
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    page.on("console", (message) => {
      const status = /status of (\d{3})/.exec(message.text());
      const provoked = status !== null && expected.includes(Number(status[1]));
      if (message.type() === "error" && !provoked) problems.push(`console: ${message.text()}`);
    });
    await body(page);
    if (problems.length > 0) throw new Error(problems.join("\n"));
    step("done");
  } finally {
    await browser.close();
  }
}

export function shot(name) {
  return { path: join(env("SCREENSHOTS"), `${name}.png`), fullPage: true };
}
