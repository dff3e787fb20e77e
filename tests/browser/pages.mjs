// The guard's own pages in a real (headless) Chromium, with a Dutch or an English browser
// (PAGE_LANG: nl or en, one per run; the context's locale sets the Accept-Language Chromium
// sends): the error page of an expired launch link, the no-session page of a protected path,
// and the signed-out page. Each is checked on what a person sees (the document language,
// the heading, the sentence, the portal link, the reference the response carries) and
// screenshotted as <page>-<lang>.png.
//
// Run by tests/browser.rs, which starts a guard with sessions and pages.portal_url:
//   node pages.mjs   with PAGE_LANG (nl, en), GUARD_URL (http://127.0.0.1:G), PORTAL_URL
//                    (pages.portal_url), EXPIRED_LAUNCH (a GET launch path with an expired
//                    token), OUT_DIR and CHROMIUM (default /usr/bin/chromium)
// Prints one line per step; exits 1 on the first failure (with a screenshot failure.png).

import { check, need, openBrowser, run, step } from './chromium.mjs';

const guard = need('GUARD_URL').replace(/\/$/, '');
const portal = need('PORTAL_URL');
const expired = need('EXPIRED_LAUNCH');
const out = need('OUT_DIR');

const LANGUAGES = {
  nl: {
    locale: 'nl-NL',
    back: 'Terug naar uw portaal',
    reference: 'Referentie',
    pages: [
      ['error', expired, 401, 'Deze startlink is verlopen', 'Start de module opnieuw vanuit uw portaal.'],
      ['session', '/task/abc', 401, 'Uw sessie is verlopen', 'Start deze module vanuit uw portaal'],
      ['logout', '/hti-guard/logout', 200, 'U bent afgemeld', 'U heeft de module verlaten.'],
    ],
  },
  en: {
    locale: 'en-GB',
    back: 'Back to your portal',
    reference: 'Reference',
    pages: [
      ['error', expired, 401, 'This start link has expired', 'Please start the module again from your portal.'],
      ['session', '/task/abc', 401, 'Your session has expired', 'Please start this module from your portal'],
      ['logout', '/hti-guard/logout', 200, 'You have been signed out', 'You have left the module.'],
    ],
  },
};

const lang = need('PAGE_LANG');
const want = LANGUAGES[lang];
check(want, `PAGE_LANG ${lang} is one of ${Object.keys(LANGUAGES)}`);
const browser = await openBrowser(out, { locale: want.locale });
await run(browser, () => walk(lang, want, browser.page, browser.shot));

async function walk(lang, want, page, shot) {
  for (const [name, path, status, title, sentence] of want.pages) {
    const response = await page.goto(`${guard}${path}`);
    check(response.status() === status, `${name} (${lang}) answered ${response.status()}`);
    const headers = response.headers();
    check(headers['content-language'] === lang, `${name}: Content-Language ${headers['content-language']}`);
    check(headers['vary'] === 'Accept-Language', `${name}: Vary ${headers['vary']}`);
    check((await page.getAttribute('html', 'lang')) === lang, `${name}: <html lang> is ${lang}`);
    check((await page.title()) === title, `${name}: title "${await page.title()}"`);
    const heading = await page.locator('h1').innerText();
    check(heading === title, `${name}: heading "${heading}" is "${title}"`);
    const body = await page.locator('body').innerText();
    check(body.includes(sentence), `${name}: "${sentence}" in ${body}`);
    check(!/Unauthorized|Not Found/.test(body), `${name}: no HTTP status words in ${body}`);
    const link = page.getByRole('link', { name: want.back });
    check((await link.count()) === 1, `${name}: a "${want.back}" link`);
    check(await link.isVisible(), `${name}: the portal link is visible`);
    check((await link.getAttribute('href')) === portal, `${name}: the link leads to ${portal}`);
    const reference = headers['x-request-id'];
    check(reference && body.includes(`${want.reference}: ${reference}`),
      `${name}: "${want.reference}: ${reference}" in ${body}`);
    await shot(`${name}-${lang}.png`);
    step(`${name} page in ${lang} (${want.locale}): "${title}", portal link, reference ${reference}`);
  }
}
