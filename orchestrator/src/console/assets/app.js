// The console's page: a router on real paths (the server answers this
// page for each of them), the session, and what every page shares (the
// confirmation dialog, the error box).

import { request, onUnauthorized } from './api.js';
import { fill, h } from './dom.js';
import * as login from './pages/login.js';
import * as clusters from './pages/clusters.js';
import * as plans from './pages/plans.js';
import * as newPlan from './pages/new-plan.js';
import * as plan from './pages/plan.js';
import * as migration from './pages/migration.js';

const routes = [
  [/^\/login$/, login],
  [/^\/(clusters)?$/, clusters],
  [/^\/plans$/, plans],
  [/^\/plans\/new$/, newPlan],
  [/^\/plans\/([^/]+)$/, plan],
  [/^\/migrations\/([^/]+)$/, migration],
];

const main = document.getElementById('main');
let user = null;
/** What stops the current page's streams. */
let leave = null;

/** Goes to `path` (pushing it on the history unless `replace`). */
export function navigate(path, replace = false) {
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  render();
}

function render() {
  if (leave) leave();
  leave = null;
  const path = location.pathname;
  if (!user && path !== '/login') {
    const next = path === '/' ? '' : `?next=${encodeURIComponent(path + location.search)}`;
    navigate(`/login${next}`, true);
    return;
  }
  document.body.classList.toggle('anonymous', !user);
  for (const link of document.querySelectorAll('nav a')) {
    link.classList.toggle('current', path.startsWith(link.getAttribute('href')));
  }
  const match = routes.map(([re, page]) => [path.match(re), page]).find(([m]) => m);
  if (!match) {
    document.title = 'Not found · mover';
    fill(main, h('h1', {}, 'Not found'), h('p', {}, `Nothing lives at ${path}.`));
    return;
  }
  const [groups, page] = match;
  const params = groups.slice(1).map((p) => (p === undefined ? p : decodeURIComponent(p)));
  fill(main);
  leave = page.show(main, params, context) || null;
}

/** Shows who is logged in, or nothing. */
function showUser(name) {
  user = name;
  document.getElementById('user').textContent = name || '';
  document.getElementById('logout').hidden = !name;
}

/**
 * Opens the confirmation dialog: `title`, `text` (what will happen) and
 * `steps` (the itinerary's); `action` runs on OK and may throw an error
 * to show in the dialog. Resolves when the dialog closes.
 */
function confirm({ title, text, steps = [], ok = 'Start', action }) {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  fill(document.getElementById('confirm-steps'), steps.map((s) => h('li', {}, s)));
  const error = document.getElementById('confirm-error');
  error.textContent = '';
  const okButton = document.getElementById('confirm-ok');
  const cancelButton = document.getElementById('confirm-cancel');
  okButton.textContent = ok;
  okButton.disabled = false;
  return new Promise((resolve) => {
    const close = () => {
      okButton.onclick = null;
      cancelButton.onclick = null;
      dialog.close();
      resolve();
    };
    cancelButton.onclick = close;
    dialog.oncancel = close;
    okButton.onclick = async () => {
      okButton.disabled = true;
      try {
        await action();
        close();
      } catch (e) {
        error.textContent = e.message;
        okButton.disabled = false;
      }
    };
    dialog.showModal();
  });
}

/** A box for the errors of a part of a page, empty until one comes. */
function problemBox(id) {
  const box = h('p', { class: 'error', id, role: 'alert' });
  box.show = (e) => {
    box.textContent = e ? e.message : '';
  };
  return box;
}

const context = {
  navigate,
  confirm,
  problemBox,
  loggedIn: (name) => showUser(name),
  get user() {
    return user;
  },
};

document.addEventListener('click', (event) => {
  const link = event.target.closest('a[href]');
  if (!link || event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const href = link.getAttribute('href');
  if (!href.startsWith('/') || href.startsWith('/api/')) return;
  event.preventDefault();
  navigate(href);
});

window.addEventListener('popstate', render);

document.getElementById('logout').addEventListener('click', async () => {
  try {
    await request('POST', '/logout');
  } finally {
    showUser(null);
    navigate('/login');
  }
});

onUnauthorized(() => {
  if (!user) return;
  showUser(null);
  navigate(`/login?next=${encodeURIComponent(location.pathname)}`, true);
});

async function start() {
  try {
    const session = await request('GET', '/session');
    showUser(session.user);
  } catch (e) {
    fill(main, h('h1', {}, 'The console cannot check your session'), h('p', { class: 'error' }, e.message));
    return;
  }
  if (user && location.pathname === '/login') navigate('/clusters', true);
  else render();
}

start();
