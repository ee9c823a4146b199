// /login: the user pastes a bearer token of the host cluster; the server
// checks it and keeps it in an HttpOnly cookie.

import { request } from '../api.js';
import { h } from '../dom.js';

export function show(main, _params, ctx) {
  document.title = 'Log in · mover';
  const token = h('input', {
    id: 'token',
    type: 'password',
    autocomplete: 'off',
    spellcheck: 'false',
    required: true,
    'aria-describedby': 'login-help login-error',
  });
  const error = h('p', { id: 'login-error', class: 'error', role: 'alert' });
  const button = h('button', { id: 'login', type: 'submit', class: 'primary' }, 'Log in');
  const submit = async (event) => {
    event.preventDefault();
    error.textContent = '';
    button.disabled = true;
    try {
      const session = await request('POST', '/login', { token: token.value });
      ctx.loggedIn(session.user);
      const next = new URLSearchParams(location.search).get('next');
      ctx.navigate(next && next.startsWith('/') && !next.startsWith('//') ? next : '/clusters', true);
    } catch (e) {
      error.textContent = e.message;
    } finally {
      button.disabled = false;
    }
  };
  main.append(
    h('section', { class: 'login' },
      h('h1', {}, 'Log in'),
      h('form', { onsubmit: submit },
        h('label', { for: 'token' }, 'Token of the host cluster'),
        token,
        h('p', { id: 'login-help', class: 'muted' },
          'You act with this token\'s own rights. Get one with ',
          h('code', {}, 'kubectl create token NAME'), ' or ', h('code', {}, 'oc whoami -t'), '.'),
        error,
        button)));
  token.focus();
}
