// /plans: every MigrationPlan with its conditions, live.

import { follow } from '../api.js';
import { fill, h } from '../dom.js';

export function show(main, _params, ctx) {
  document.title = 'Plans · mover';
  const problem = ctx.problemBox('plans-error');
  const body = h('tbody');
  const empty = h('p', { class: 'muted', hidden: true }, 'No plan yet.');
  main.append(
    h('div', { class: 'title' },
      h('h1', {}, 'Plans'),
      h('a', { id: 'new-plan', class: 'button primary', href: '/plans/new' }, 'New plan')),
    problem,
    h('div', { class: 'scroll' },
      h('table', { class: 'list' },
        h('thead', {}, h('tr', {},
          h('th', {}, 'Name'), h('th', {}, 'Source'), h('th', {}, 'Destination'),
          h('th', {}, 'Namespaces'), h('th', {}, 'Conditions'))),
        body)),
    empty);
  return follow('plans', {}, (plans) => {
    plans.sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
    empty.hidden = plans.length > 0;
    fill(body, plans.map(row));
  }, problem.show);
}

function row(plan) {
  const name = plan.metadata.name;
  return h('tr', { 'data-plan': name },
    h('td', { 'data-label': 'Name' }, h('a', { href: `/plans/${encodeURIComponent(name)}` }, name)),
    h('td', { 'data-label': 'Source' }, plan.spec?.sourceCluster || ''),
    h('td', { 'data-label': 'Destination' }, plan.spec?.destinationCluster || ''),
    h('td', { 'data-label': 'Namespaces' }, (plan.spec?.plan?.namespaces || []).join(', ')),
    h('td', { 'data-field': 'conditions', 'data-label': 'Conditions' }, conditionChips(plan)));
}

/** A plan's conditions as chips: Ready, or what keeps it from being ready. */
export function conditionChips(plan) {
  const conditions = plan.status?.conditions || [];
  if (!conditions.length) return h('span', { class: 'state waiting' }, 'validating…');
  return conditions.map((c) => {
    const good = c.type === 'Ready' ? c.status === 'True' : c.status !== 'True';
    const kind = good ? 'done' : (c.type === 'PodsNotHealthy' ? 'warning' : 'failed');
    const label = c.type === 'Ready' && c.status !== 'True' ? `Not ready: ${c.reason || ''}` : c.type;
    return h('span', { class: `chip ${kind}`, title: c.message || '' }, label);
  });
}
