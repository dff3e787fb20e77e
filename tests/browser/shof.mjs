// A SHOF login in a real (headless) Chromium: a portal page on one site (127.0.0.1, served
// by this script) sends the launch to the guard on another (localhost), the guard redirects
// to the mock auth server's authorize (127.0.0.1 again: it approves at once, standing in for
// the IdP login), which redirects back to the guard's callback; the guard exchanges the code
// and lands the browser on the app's task page, which shows the person. Then a reload, a
// second page, and logout.
//
// Run by tests/browser.rs:
//   node shof.mjs   with GUARD_URL (http://localhost:G), FHIR_BASE (the launch's iss),
//                   TOKEN (a launch token), AUTHORIZE (the authorization endpoint),
//                   CALLBACK (the callback path), PERSON (the launch's sub),
//                   OUT_DIR (screenshots) and CHROMIUM (default /usr/bin/chromium)
// Prints one line per step; exits 1 on the first failure (with a screenshot failure.png).

import { createServer } from 'node:http';
import { check, need, openBrowser, run, step } from './chromium.mjs';

const guard = need('GUARD_URL').replace(/\/$/, '');
const fhirBase = need('FHIR_BASE');
const token = need('TOKEN');
const authorize = need('AUTHORIZE');
const callback = need('CALLBACK');
const person = need('PERSON');
const out = need('OUT_DIR');
const COOKIE = 'hti_guard_session';
const TASK_PAGE = `${guard}/task/abc`;

const escape = (s) => s.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

// The portal: one page whose form launches the module (as a Koppeltaal portal does: iss and
// launch), submitted by a click.
const portalPage = `<!doctype html><title>Portal</title>
<form method="get" action="${escape(guard)}/launch">
  <input type="hidden" name="iss" value="${escape(fhirBase)}">
  <input type="hidden" name="launch" value="${escape(token)}">
  <button id="launch">Open the module</button>
</form>`;
const portal = createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/html' });
  res.end(portalPage);
});
await new Promise((resolve) => portal.listen(0, '127.0.0.1', resolve));
const portalUrl = `http://127.0.0.1:${portal.address().port}/`;

const browser = await openBrowser(out);
const { context, page, shot } = browser;
const body = async () => page.locator('body').innerText();
const cookies = async () => context.cookies(guard);
// Every document the browser asked for, to see the hops of the login.
const hops = [];
page.on('request', (request) => {
  if (request.isNavigationRequest()) hops.push(request.url());
});

await run(browser, async () => {
  // 1. The portal on 127.0.0.1; the launch goes to the guard on localhost.
  let response = await page.goto(portalUrl);
  check(response.status() === 200, `portal answered ${response.status()}`);
  await page.locator('#launch').click();
  await page.waitForURL(TASK_PAGE);
  step(`launch from ${portalUrl} landed on ${page.url()}`);
  const visited = (prefix) => hops.some((url) => url.startsWith(prefix));
  check(visited(`${guard}/launch?`), `the launch hop: ${hops.join(' -> ')}`);
  check(visited(`${authorize}?`), `the authorize hop: ${hops.join(' -> ')}`);
  check(visited(`${guard}${callback}?`), `the callback hop: ${hops.join(' -> ')}`);
  step(`the hops: ${hops.map((url) => url.split('?')[0]).join(' -> ')}`);

  // 2. The task page shows the person; the session cookie is set, the login cookie gone.
  check((await body()).includes(person), `the person on the task page: ${(await body()).slice(0, 400)}`);
  const jar = await cookies();
  const session = jar.find((c) => c.name === COOKIE);
  check(session, `a ${COOKIE} cookie: ${JSON.stringify(jar.map((c) => c.name))}`);
  check(session.httpOnly && session.sameSite === 'Lax', `session cookie: ${JSON.stringify({ ...session, value: '…' })}`);
  check(!jar.some((c) => c.path === callback), `no login cookie left: ${JSON.stringify(jar.map((c) => [c.name, c.path]))}`);
  step(`the task page shows ${person}; session cookie set, login cookie cleared`);
  await shot('shof-landing.png');

  // 3. A reload: the same page and person, no second login.
  const before = hops.length;
  response = await page.reload();
  check(response.status() === 200, `reload answered ${response.status()}`);
  check(page.url() === TASK_PAGE, `reload stays: ${page.url()}`);
  check((await body()).includes(person), 'the person after reload');
  check(!hops.slice(before).some((url) => url.startsWith(authorize)), 'no new login on reload');
  step('reload keeps the page and the person');

  // 4. A second page of the app: the same person.
  response = await page.goto(`${TASK_PAGE}/answers`);
  check(response.status() === 200, `second page answered ${response.status()}`);
  check((await body()).includes(person), 'the person on the second page');
  step('a second page carries the same person');
  await shot('shof-second.png');

  // 5. Logout clears the session; the task page is then closed.
  response = await page.goto(`${guard}/hti-guard/logout`);
  check(response.status() < 400, `logout answered ${response.status()}`);
  check(!(await cookies()).some((c) => c.name === COOKIE), 'logout removed the session cookie');
  response = await page.goto(TASK_PAGE);
  check(response.status() === 401, `after logout the task page answered ${response.status()}`);
  check(!(await body()).includes(person), 'the person is gone after logout');
  step('logout ends the session: the task page is the guard\'s 401 page');
  await shot('shof-logged-out.png');
}, () => `; hops: ${hops.join(' -> ')}`);
