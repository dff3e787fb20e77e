// A person's visit through hti-guard's demo, in a real (headless) Chromium: the portal on
// one site (127.0.0.1) auto-submits a launch to the guard on another (localhost), the guard
// answers 303 with its session cookie, and the module's pages keep the person until logout.
//
// Run by tests/browser.rs, which starts `hti-guard demo --guard-host localhost`:
//   node session.mjs   with PORTAL_URL (http://127.0.0.1:P/), GUARD_URL (http://localhost:G),
//                      OUT_DIR (screenshots) and CHROMIUM (default /usr/bin/chromium)
// Prints one line per step; exits 1 on the first failure (with a screenshot failure.png).

import { check, Failure, need, openBrowser, run, step } from './chromium.mjs';

const portal = need('PORTAL_URL').replace(/\/$/, '');
const guard = need('GUARD_URL').replace(/\/$/, '');
const out = need('OUT_DIR');
const COOKIE = 'hti_guard_session';
const PERSON = 'Practitioner/demo-practitioner-1';
const TASK = 'demo-task-101';

const browser = await openBrowser(out);
const { context, page, shot } = browser;
// The text of an element that must be on the page now (fails at once, with the page's text).
const text = async (selector) => {
  const element = page.locator(selector).first();
  if ((await element.count()) === 0) {
    const body = (await page.locator('body').innerText()).slice(0, 400);
    throw new Failure(`no ${selector} on ${page.url()}: ${body}`);
  }
  return element.innerText();
};
const sessionCookie = async () =>
  (await context.cookies(guard)).find((c) => c.name === COOKIE);

await run(browser, async () => {
  // 1. The portal, on 127.0.0.1: click the first launch button. Its page auto-submits
  //    the launch form to the guard on localhost, another site.
  let response = await page.goto(`${portal}/`);
  check(response.status() === 200, `portal answered ${response.status()}`);
  check(new URL(page.url()).hostname === '127.0.0.1', `portal at ${page.url()}`);
  await page.getByRole('button', { name: 'Launch (HTI: token)' }).first().click();
  await page.waitForURL(`${guard}/task/${TASK}`);
  step(`launch from ${portal} landed on ${page.url()}`);

  // 2. The landing page shows the person and the task.
  check((await text('#person')).includes(PERSON), 'the person on the landing page');
  check((await text('#x-hti-resource')) === `Task/${TASK}`, 'task on the landing page');
  check((await text('#cookies')).includes('received: none'), 'the guard cookie is not forwarded');
  const cookie = await sessionCookie();
  check(cookie, `a ${COOKIE} cookie for ${guard}`);
  check(cookie.httpOnly && cookie.sameSite === 'Lax' && cookie.path === '/',
    `cookie attributes: ${JSON.stringify({ ...cookie, value: '…' })}`);
  check(!(await page.evaluate(() => document.cookie)).includes(COOKIE), 'HttpOnly: no script sees it');
  step(`the task page shows ${PERSON} and Task/${TASK}; HttpOnly SameSite=Lax cookie set`);

  // 3. A reload: the same page, no replay error (the launch was a POST; the page is a GET).
  response = await page.reload();
  check(response.status() === 200, `reload answered ${response.status()}`);
  check(page.url() === `${guard}/task/${TASK}`, `reload stays: ${page.url()}`);
  check((await text('#person')).includes(PERSON), 'the person after reload');
  step('reload keeps the page, no replay error');

  // 4. The spoof button: the module gets the session's headers, not the spoofed ones.
  await page.locator('#spoof').click();
  await page.locator('#spoof-result', { hasText: 'none of them' }).waitFor();
  check((await text('#spoof-result')).includes(PERSON), 'the verified person echoed');
  step('spoofed headers removed, verified ones set');
  await shot('landing.png');

  // 5. The second page by a click, and a form POST on it: the same person.
  await page.locator('#answers').click();
  await page.waitForURL(`${guard}/task/${TASK}/answers`);
  check((await text('#person')).includes(PERSON), 'the person on the second page');
  await page.locator('select[name=answer]').selectOption('So-so');
  await page.locator('#save').click();
  await page.locator('#saved').waitFor();
  check((await text('#saved')).includes(PERSON), 'the answer saved for the person');
  step('second page and its form POST carry the same person');
  await shot('answers.png');

  // 6. Log out: the guard clears the cookie.
  await page.locator('#logout').click();
  await page.waitForLoadState();
  check(!(await sessionCookie()), 'logout removed the cookie');
  step(`logout at ${page.url()} removed the cookie`);
  await shot('logged-out.png');

  // 7. A protected page now: the guard's 401 page telling the person to use the portal.
  response = await page.goto(`${guard}/task/${TASK}`);
  check(response.status() === 401, `after logout the task page answered ${response.status()}`);
  check((await text('body')).toLowerCase().includes('portal'), `no-session page: ${await text('body')}`);
  check(!(await text('body')).includes('Demo module'), 'nothing from the module');
  step('after logout the task page is the guard\'s 401 "start from your portal" page');
  await shot('no-session.png');

  // 8. The replay refusal from the portal: the guard's error page, no session.
  await page.goto(`${portal}/`);
  await page.getByRole('button', { name: 'The same token twice' }).click();
  await page.waitForURL(/\/refuse\?/);
  const [refused] = await Promise.all([
    page.waitForResponse((r) => r.url() === `${guard}/launch`),
    page.getByRole('button', { name: 'Send it to the module' }).click(),
  ]);
  await page.waitForLoadState();
  check(refused.status() === 401, `replayed launch answered ${refused.status()}`);
  check((await text('body')).includes('already been used'), `replay page: ${await text('body')}`);
  check(!(await sessionCookie()), 'a refused launch sets no cookie');
  step('a replayed token ends on the guard\'s error page, no session');
  await shot('replay.png');
});
