// /plans/NAME: what the plan moves (namespaces; PVCs with size, class
// mapping, access modes, the node a ReadWriteOnce volume is pinned to;
// images), what keeps it from running, its runs, and the buttons that
// start stage, final and rollback runs.

import { follow, request } from '../api.js';
import { fill, h } from '../dom.js';
import { time } from '../format.js';
import { itineraries } from './itineraries.js';

export function show(main, [name], ctx) {
  document.title = `${name} · plans · mover`;
  const problem = ctx.problemBox('plan-error');
  const summary = h('dl', { class: 'summary' });
  const conditions = h('ul', { id: 'plan-conditions', class: 'conditions' });
  const pvcBody = h('tbody');
  const pvcProblem = ctx.problemBox('pvcs-error');
  const images = h('div', { id: 'plan-images' });
  const runsBody = h('tbody');
  const runsProblem = ctx.problemBox('runs-error');
  const buttons = ['stage', 'final', 'rollback'].map((kind) => h('button', {
    id: `run-${kind}`,
    type: 'button',
    class: kind === 'final' ? 'primary' : (kind === 'rollback' ? 'danger' : ''),
    onclick: () => start(kind),
  }, { stage: 'Stage', final: 'Final migration', rollback: 'Roll back' }[kind]));

  main.append(
    h('div', { class: 'title' }, h('h1', {}, `Plan ${name}`), h('div', { class: 'buttons' }, buttons)),
    problem,
    summary,
    h('h2', {}, 'Conditions'), conditions,
    h('h2', {}, 'Volumes'), pvcProblem,
    h('div', { class: 'scroll' }, h('table', { class: 'list' },
      h('thead', {}, h('tr', {},
        h('th', {}, 'PVC'), h('th', {}, 'Size'), h('th', {}, 'Storage class'),
        h('th', {}, 'Access modes'), h('th', {}, 'Pinned to node'))),
      pvcBody)),
    h('h2', {}, 'Images'), images,
    h('h2', {}, 'Runs'), runsProblem,
    h('div', { class: 'scroll' }, h('table', { class: 'list' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Run'), h('th', {}, 'Kind'), h('th', {}, 'Phase'), h('th', {}, 'Step'), h('th', {}, 'Started'))),
      runsBody)));

  async function start(kind) {
    const itinerary = (await itineraries())[kind];
    await ctx.confirm({
      title: `Start a ${kind} run of ${name}?`,
      text: itinerary.consequence,
      steps: itinerary.steps.map((s) => `${s.name}: ${s.description}`),
      ok: `Start ${kind}`,
      action: async () => {
        const run = await request('POST', `/plans/${encodeURIComponent(name)}/runs`, { kind });
        ctx.navigate(`/migrations/${encodeURIComponent(run.name)}`);
      },
    });
  }

  let shownSpec = null;
  const stopPlan = follow('plans', { name }, ([plan]) => {
    if (!plan) {
      problem.show({ message: `There is no plan ${name} (or it was deleted).` });
      for (const b of buttons) b.disabled = true;
      return;
    }
    const spec = plan.spec || {};
    const fields = spec.plan || {};
    fill(summary,
      h('dt', {}, 'Source'), h('dd', {}, spec.sourceCluster),
      h('dt', {}, 'Destination'), h('dd', {}, spec.destinationCluster),
      h('dt', {}, 'Namespaces'), h('dd', { id: 'plan-namespaces' }, (fields.namespaces || []).join(', ')),
      h('dt', {}, 'Final run'), h('dd', {},
        fields.quiesce === false ? 'the source keeps running' : 'the source is quiesced (scaled to 0)',
        fields.volumesOnly ? '; only volumes and images move' : '; resources move with Velero'));
    fill(conditions, (plan.status?.conditions || []).map((c) => h('li', {
      class: (c.type === 'Ready') === (c.status === 'True') ? 'good' : 'bad',
      'data-condition': c.type,
    }, h('strong', {}, c.type), ` ${c.status}`, c.reason ? ` (${c.reason})` : '', c.message ? `: ${c.message}` : '')));
    if (!plan.status?.conditions?.length) fill(conditions, h('li', { class: 'muted' }, 'The controller has not validated this plan yet.'));
    const registries = fields.images;
    fill(images, registries
      ? h('p', {}, `Internal images move from ${registries.source?.url || registries.source?.host || 'the source registry'} to ${registries.destination?.url || registries.destination?.host || 'the destination registry'}; each run lists the images it copied.`)
      : h('p', { class: 'muted' }, 'No registries in this plan: images are not copied.'));
    const key = JSON.stringify([spec.sourceCluster, fields.namespaces, fields.pvcs, fields.storageClassMapping]);
    if (key !== shownSpec) {
      shownSpec = key;
      loadPvcs(spec, fields);
    }
  }, problem.show);

  async function loadPvcs(spec, fields) {
    pvcProblem.show(null);
    const namespaces = (fields.namespaces || []).map((n) => n.split(':')[0]);
    if (!namespaces.length) return;
    try {
      const list = await request('GET', `/clusters/${encodeURIComponent(spec.sourceCluster)}/pvcs?namespaces=${encodeURIComponent(namespaces.join(','))}`);
      const chosen = fields.pvcs || [];
      const mapping = fields.storageClassMapping || {};
      const rows = list.filter((p) => !chosen.length || chosen.includes(`${p.namespace}/${p.name}`));
      fill(pvcBody, rows.map((p) => {
        const rwo = (p.accessModes || []).some((m) => m === 'ReadWriteOnce' || m === 'ReadWriteOncePod');
        const to = p.storageClass && mapping[p.storageClass];
        return h('tr', { 'data-pvc': `${p.namespace}/${p.name}` },
          h('td', { 'data-label': 'PVC' }, `${p.namespace}/${p.name}`, p.volumeMode === 'Block' ? h('span', { class: 'tag' }, 'block') : null),
          h('td', { 'data-field': 'size', 'data-label': 'Size' }, p.size || '—'),
          h('td', { 'data-field': 'class', 'data-label': 'Storage class' }, p.storageClass || '(default)', to ? ` → ${to}` : ''),
          h('td', { 'data-field': 'access', 'data-label': 'Access modes' }, (p.accessModes || []).join(', ')),
          h('td', { 'data-field': 'node', 'data-label': 'Pinned to node' }, rwo ? (p.node || 'not mounted') : '—'));
      }));
      if (!rows.length) fill(pvcBody, h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No PVCs: only resources move.')));
    } catch (e) {
      pvcProblem.show(e);
    }
  }

  const stopRuns = follow('migrations', { plan: name }, (runs) => {
    runs.sort((a, b) => (b.metadata.creationTimestamp || '').localeCompare(a.metadata.creationTimestamp || ''));
    fill(runsBody, runs.map((m) => h('tr', { 'data-run': m.metadata.name },
      h('td', { 'data-label': 'Run' }, h('a', { href: `/migrations/${encodeURIComponent(m.metadata.name)}` }, m.metadata.name)),
      h('td', { 'data-label': 'Kind' }, m.spec?.kind || ''),
      h('td', { 'data-label': 'Phase' }, m.status?.phase || 'Running'),
      h('td', { 'data-label': 'Step' }, m.status?.step || ''),
      h('td', { 'data-label': 'Started' }, time(m.status?.started || m.metadata.creationTimestamp)))));
    if (!runs.length) fill(runsBody, h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No run yet.')));
  }, runsProblem.show);

  return () => {
    stopPlan();
    stopRuns();
  };
}
