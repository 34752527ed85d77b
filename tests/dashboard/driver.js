// Drives Debian's chromium (headless) for the Rust tests (tests/src/browser.rs): one JSON
// command per line on stdin, one JSON answer per line on stdout ({ok, value} or {ok: false,
// error}). Console errors, page errors and failed requests of every page are collected and
// returned by `errors`. The browser closes when stdin does (and the Rust side kills the whole
// process group if this script hangs).
'use strict';

const readline = require('node:readline');
const { chromium } = require('playwright-core');

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
let browser = null;
let page = null;
const errors = [];

async function open(url) {
  if (!browser) {
    browser = await chromium.launch({
      executablePath,
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    });
  }
  const context = await browser.newContext({ viewport: { width: 1500, height: 1000 } });
  page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push('console: ' + m.text());
  });
  page.on('pageerror', (e) => errors.push('page error: ' + e.message));
  page.on('requestfailed', (r) => {
    // Aborting the event stream on purpose (a logout, the page closing) is no failure.
    const why = r.failure() ? r.failure().errorText : '';
    if (why !== 'net::ERR_ABORTED') errors.push('request failed: ' + r.url() + ' ' + why);
  });
  const resp = await page.goto(url, { waitUntil: 'load', timeout: 20000 });
  return { status: resp ? resp.status() : 0, csp: resp ? resp.headers()['content-security-policy'] || null : null };
}

function need() {
  if (!page) throw new Error('no page: send `open` first');
  return page;
}

const ops = {
  open: (c) => open(c.url),
  fill: async (c) => need().fill(c.selector, c.value, { timeout: c.timeout_ms || 10000 }),
  click: async (c) => need().click(c.selector, { timeout: c.timeout_ms || 10000 }),
  // Waits until the first element matching `selector` has text matching `text` (a regular
  // expression; left out: any element); answers its text.
  wait: async (c) => {
    const p = need();
    const handle = await p.waitForFunction(
      ([sel, re]) => {
        for (const e of document.querySelectorAll(sel)) {
          if (re === null || new RegExp(re).test(e.textContent)) return e.textContent;
        }
        return false;
      },
      [c.selector, c.text === undefined ? null : c.text],
      { timeout: c.timeout_ms || 10000, polling: 200 },
    );
    return handle.jsonValue();
  },
  texts: async (c) => need().$$eval(c.selector, (es) => es.map((e) => e.textContent)),
  screenshot: async (c) => {
    await need().screenshot({ path: c.path, fullPage: !!c.full_page });
    return c.path;
  },
  errors: async () => errors.slice(),
  close: async () => {
    if (browser) await browser.close();
    browser = null;
    page = null;
  },
};

async function main() {
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of rl) {
    if (!line.trim()) continue;
    let answer;
    try {
      const c = JSON.parse(line);
      const op = ops[c.op];
      if (!op) throw new Error('unknown op ' + JSON.stringify(c.op));
      const value = await op(c);
      answer = { ok: true, value: value === undefined ? null : value };
    } catch (e) {
      answer = { ok: false, error: String((e && e.message) || e) };
    }
    process.stdout.write(JSON.stringify(answer) + '\n');
  }
  await ops.close();
}

main().catch((e) => {
  process.stderr.write(String((e && e.stack) || e) + '\n');
  process.exit(1);
});
