// /migrations/NAME: a run live — its itinerary as a pipeline, a row per
// PVC with a progress bar and the mover's counters, the images, the
// throughput, and the cancel button.

import { follow, request } from '../api.js';
import { fill, h } from '../dom.js';
import { between, bytes, duration, time } from '../format.js';
import { throughputChart } from './chart.js';
import { itineraries } from './itineraries.js';

/** The engine's step phases as the page's states. */
const STEP_STATES = { Pending: 'waiting', Running: 'running', Done: 'done', Failed: 'failed', Skipped: 'skipped' };

export function show(main, [name], ctx) {
  document.title = `${name} · migrations · mover`;
  const problem = ctx.problemBox('migration-error');
  const heading = h('h1', {}, `Migration ${name}`);
  const phase = h('span', { id: 'phase', class: 'state', 'data-state': 'running' }, 'Running');
  const about = h('p', { class: 'muted' });
  const cancel = h('button', { id: 'cancel', type: 'button', class: 'danger', onclick: () => cancelRun() }, 'Cancel');
  const pipeline = h('ol', { class: 'pipeline', id: 'pipeline' });
  const pvcBody = h('tbody');
  const imageBody = h('tbody');
  const errors = h('ul', { class: 'errors', id: 'migration-errors' });
  const chart = throughputChart();
  let descriptions = {};
  let latest = null;

  main.append(
    h('div', { class: 'title' }, heading, h('div', { class: 'buttons' }, phase, cancel)),
    about, problem, errors,
    h('h2', {}, 'Steps'), pipeline,
    h('h2', {}, 'Volumes'),
    h('div', { class: 'scroll' }, h('table', { class: 'list pvcs' },
      h('thead', {}, h('tr', {},
        h('th', {}, 'PVC'), h('th', {}, 'Progress'), h('th', {}, 'Bytes'), h('th', {}, 'Files'),
        h('th', {}, 'Rate'), h('th', {}, 'ETA'), h('th', {}, 'Attempt'), h('th', {}, 'Reason'))),
      pvcBody)),
    h('h2', {}, 'Throughput'),
    chart,
    h('h2', {}, 'Images'),
    h('div', { class: 'scroll' }, h('table', { class: 'list' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Image'), h('th', {}, 'State'), h('th', {}, 'Blobs'), h('th', {}, 'Bytes'), h('th', {}, 'Reason'))),
      imageBody)));

  itineraries().then((all) => {
    for (const kind of ['stage', 'final', 'rollback']) {
      for (const s of all[kind].steps) descriptions[s.name] = s.description;
    }
    if (latest) render(latest);
  }, problem.show);

  async function cancelRun() {
    const all = await itineraries();
    await ctx.confirm({
      title: `Cancel ${name}?`,
      text: all.cancel.consequence,
      ok: 'Cancel the run',
      action: () => request('DELETE', `/migrations/${encodeURIComponent(name)}`),
    });
  }

  function render(m) {
    latest = m;
    const status = m.status || {};
    const state = (status.phase || 'Running').toLowerCase();
    phase.dataset.state = state;
    phase.textContent = status.phase || 'Running';
    cancel.disabled = state !== 'running' || !!m.metadata.deletionTimestamp;
    const planName = m.spec?.planRef || m.spec?.planName || '';
    fill(about,
      `A ${m.spec?.kind || ''} run of plan `,
      planName ? h('a', { href: `/plans/${encodeURIComponent(planName)}` }, planName) : '?',
      status.started ? `, started ${time(status.started)}` : ', waiting for the controller',
      status.finished ? `, finished ${time(status.finished)}` : '',
      m.metadata.deletionTimestamp ? ' — being cancelled: the controller is removing its transfer pods' : '');
    fill(errors, (status.errors || []).map((e) => h('li', { class: 'error' }, e)));
    renderSteps(m, status);
    renderPvcs(status);
    renderImages(status);
  }

  function renderSteps(m, status) {
    let steps = status.steps || [];
    if (!steps.length) {
      itineraries().then((all) => {
        if (latest === m && !(m.status?.steps || []).length) {
          fill(pipeline, (all[m.spec?.kind]?.steps || []).map((s) => step({ name: s.name, phase: 'Pending' })));
        }
      }, problem.show);
      return;
    }
    fill(pipeline, steps.map(step));
  }

  function step(s) {
    const state = STEP_STATES[s.phase] || 'waiting';
    const took = s.started ? duration(between(s.started, s.finished)) : '';
    return h('li', { 'data-step': s.name, 'data-state': state, class: `step ${state}` },
      h('span', { class: 'step-name' }, s.name),
      h('span', { class: 'step-state' }, state),
      descriptions[s.name] ? h('span', { class: 'step-description' }, descriptions[s.name]) : null,
      s.started ? h('span', { class: 'step-time' }, `${time(s.started)}${s.finished ? ` – ${time(s.finished)}` : ''} (${took})`) : null,
      s.message ? h('span', { class: 'step-message' }, s.message) : null,
      s.retries ? h('span', { class: 'step-retries' }, `${s.retries} retries`) : null);
  }

  function renderPvcs(status) {
    const pvcs = status.pvcs || [];
    if (!pvcs.length) {
      fill(pvcBody, h('tr', {}, h('td', { colspan: 8, class: 'muted' }, 'No volume copy has started.')));
      return;
    }
    let rate = 0;
    fill(pvcBody, pvcs.map((p) => {
      const done = Number(p.bytes_done) || 0;
      const total = Math.max(Number(p.bytes_examined) || 0, done);
      const copying = p.state === 'copying' || p.state === 'starting' || p.state === 'retrying';
      if (copying) rate += Number(p.rate_bytes_per_sec) || 0;
      const finished = p.state === 'done' || p.state === 'skipped';
      return h('tr', { 'data-pvc': `${p.namespace}/${p.name}`, 'data-state': p.state, class: p.state },
        h('td', { 'data-label': 'PVC' }, `${p.namespace}/${p.name}`,
          p.destination_namespace && p.destination_namespace !== p.namespace ? ` → ${p.destination_namespace}` : ''),
        h('td', { 'data-label': 'Progress' },
          h('progress', { value: finished && total === 0 ? 1 : done, max: total || 1 }),
          h('span', { class: 'pvc-state' }, ` ${p.state}`)),
        h('td', { 'data-field': 'bytes', 'data-label': 'Bytes' }, `${bytes(done)} of ${bytes(total)}`),
        h('td', { 'data-field': 'files', 'data-label': 'Files' }, String(p.files_examined ?? 0)),
        h('td', { 'data-field': 'rate', 'data-label': 'Rate' }, copying && p.rate_bytes_per_sec ? `${bytes(p.rate_bytes_per_sec)}/s` : '—'),
        h('td', { 'data-field': 'eta', 'data-label': 'ETA' }, copying && p.eta_secs != null ? duration(p.eta_secs) : '—'),
        h('td', { 'data-field': 'attempt', 'data-label': 'Attempt' }, String(p.attempts ?? 0)),
        h('td', { 'data-field': 'reason', 'data-label': 'Reason', class: p.error ? 'error' : '' }, p.error || p.warning || ''));
    }));
    if ((status.phase || 'Running') === 'Running') chart.add(Date.now(), rate);
  }

  function renderImages(status) {
    const images = status.images || [];
    if (!images.length) {
      fill(imageBody, h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No images copied in this run.')));
      return;
    }
    fill(imageBody, images.map((i) => h('tr', { 'data-image': i.reference, class: i.state },
      h('td', { 'data-label': 'Image' }, `${i.namespace}/${i.image_stream}:${i.tag}`, h('span', { class: 'muted' }, ` ${i.reference}`)),
      h('td', { 'data-field': 'state', 'data-label': 'State' }, i.state),
      h('td', { 'data-field': 'blobs', 'data-label': 'Blobs' }, i.blobs != null ? `${i.blobs} (${i.uploaded || 0} uploaded, ${i.mounted || 0} mounted, ${i.existing || 0} present)` : '—'),
      h('td', { 'data-field': 'bytes', 'data-label': 'Bytes' }, i.bytes != null ? `${bytes(i.bytes)} (${bytes(i.bytes_uploaded || 0)} sent)` : '—'),
      h('td', { 'data-field': 'reason', 'data-label': 'Reason', class: i.error ? 'error' : '' }, i.error || ''))));
  }

  return follow('migrations', { name }, ([m]) => {
    if (!m) {
      if (latest) {
        cancel.disabled = true;
        problem.show({ message: `Migration ${name} is gone: it was cancelled or deleted.` });
      } else {
        problem.show({ message: `There is no Migration ${name}.` });
      }
      return;
    }
    problem.show(null);
    render(m);
  }, problem.show);
}
