// /clusters: each registered MigrationCluster with what the controller
// found when it last connected, live.

import { follow } from '../api.js';
import { fill, h } from '../dom.js';
import { condition, time, yesNo } from '../format.js';

export function show(main, _params, ctx) {
  document.title = 'Clusters · mover';
  const problem = ctx.problemBox('clusters-error');
  const body = h('tbody');
  const empty = h('p', { class: 'muted', hidden: true },
    'No cluster is registered yet: create a MigrationCluster (see the README).');
  main.append(
    h('h1', {}, 'Clusters'),
    problem,
    h('div', { class: 'scroll' },
      h('table', { class: 'list' },
        h('thead', {}, h('tr', {},
          h('th', {}, 'Name'), h('th', {}, 'Reachable'), h('th', {}, 'Version'),
          h('th', {}, 'OpenShift'), h('th', {}, 'Velero'), h('th', {}, 'Registry'))),
        body)),
    empty);
  return follow('clusters', {}, (clusters) => {
    clusters.sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
    empty.hidden = clusters.length > 0;
    fill(body, clusters.map(row));
  }, problem.show);
}

function row(cluster) {
  const status = cluster.status || {};
  return h('tr', { 'data-cluster': cluster.metadata.name },
    h('td', { 'data-label': 'Name' }, cluster.metadata.name,
      cluster.spec?.isHostCluster ? h('span', { class: 'tag' }, 'host') : null),
    reachable(cluster),
    h('td', { 'data-field': 'version', 'data-label': 'Version' }, status.kubernetesVersion || '—'),
    h('td', { 'data-field': 'openshift', 'data-label': 'OpenShift' }, yesNo(status.openShift)),
    h('td', { 'data-field': 'velero', 'data-label': 'Velero' }, yesNo(status.velero)),
    h('td', { 'data-field': 'registry', 'data-label': 'Registry' }, status.registryPath || '—'));
}

/** The Ready condition: yes, or no with the cluster's own words. */
function reachable(cluster) {
  const ready = condition(cluster, 'Ready');
  const cell = h('td', { 'data-field': 'reachable', 'data-label': 'Reachable' });
  if (!ready) return fill(cell, h('span', { class: 'state waiting' }, 'checking…'));
  const since = ready.lastTransitionTime ? ` since ${time(ready.lastTransitionTime)}` : '';
  if (ready.status === 'True') {
    return fill(cell, h('span', { class: 'state done', title: `ready${since}` }, 'yes'));
  }
  return fill(cell,
    h('span', { class: 'state failed' }, 'no'),
    h('span', { class: 'reason' }, ` ${ready.reason || ''}: ${ready.message || ''}`));
}
