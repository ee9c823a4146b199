// /plans/new: a plan from a form. The source's namespaces appear once a
// source is chosen, the PVCs of the chosen namespaces once those are
// (all checked: a plan usually moves every volume of its namespaces).
// Each problem, the page's own or the server's, shows at its field.

import { follow, request } from '../api.js';
import { fill, h } from '../dom.js';

const FIELDS = ['plan-name', 'source-cluster', 'destination-cluster', 'namespace', 'pvc'];

export function show(main, _params, ctx) {
  document.title = 'New plan · mover';
  const errors = Object.fromEntries(FIELDS.map((f) => [f, h('p', { class: 'field-error', 'data-for': f, role: 'alert' })]));
  const formError = ctx.problemBox('form-error');
  const name = h('input', { id: 'plan-name', name: 'plan-name', autocomplete: 'off', spellcheck: 'false' });
  const source = h('select', { id: 'source-cluster', name: 'source-cluster' });
  const destination = h('select', { id: 'destination-cluster', name: 'destination-cluster' });
  const namespaces = h('div', { class: 'choices', id: 'namespaces' }, h('p', { class: 'muted' }, 'Choose the source first.'));
  const pvcs = h('div', { class: 'choices', id: 'pvcs' }, h('p', { class: 'muted' }, 'Choose namespaces first.'));
  const create = h('button', { id: 'create-plan', type: 'submit', class: 'primary' }, 'Create plan');
  /** PVCs the user unchecked, kept across reloads of the list. */
  const unchecked = new Set();
  let pvcLoad = 0;

  const showErrors = (fields) => {
    for (const f of FIELDS) errors[f].textContent = fields[f] || '';
  };

  const clusterOptions = (select, clusters) => {
    const chosen = select.value;
    fill(select, h('option', { value: '' }, 'Choose a cluster…'),
      clusters.map((c) => h('option', { value: c.metadata.name }, c.metadata.name)));
    select.value = clusters.some((c) => c.metadata.name === chosen) ? chosen : '';
  };

  const loadPvcs = async () => {
    const chosen = checked('namespace');
    const load = ++pvcLoad;
    errors.pvc.textContent = '';
    if (!chosen.length) {
      fill(pvcs, h('p', { class: 'muted' }, 'Choose namespaces first.'));
      return;
    }
    fill(pvcs, h('p', { class: 'muted' }, 'Loading PVCs…'));
    try {
      const list = await request('GET', `/clusters/${encodeURIComponent(source.value)}/pvcs?namespaces=${encodeURIComponent(chosen.join(','))}`);
      if (load !== pvcLoad) return;
      if (!list.length) {
        fill(pvcs, h('p', { class: 'muted' }, 'These namespaces have no PVCs: only their resources move.'));
        return;
      }
      fill(pvcs, list.map((p) => {
        const value = `${p.namespace}/${p.name}`;
        return h('label', { class: 'choice' },
          h('input', {
            type: 'checkbox', name: 'pvc', value, checked: !unchecked.has(value),
            onchange: (e) => (e.target.checked ? unchecked.delete(value) : unchecked.add(value)),
          }),
          ` ${value}`,
          h('span', { class: 'muted' }, ` ${p.size || '?'} · ${p.storageClass || 'no class'} · ${(p.accessModes || []).join(', ')}`));
      }));
    } catch (e) {
      if (load !== pvcLoad) return;
      fill(pvcs);
      errors.pvc.textContent = e.message;
    }
  };

  const loadNamespaces = async () => {
    errors.namespace.textContent = '';
    fill(pvcs, h('p', { class: 'muted' }, 'Choose namespaces first.'));
    if (!source.value) {
      fill(namespaces, h('p', { class: 'muted' }, 'Choose the source first.'));
      return;
    }
    fill(namespaces, h('p', { class: 'muted' }, 'Loading namespaces…'));
    const cluster = source.value;
    try {
      const list = await request('GET', `/clusters/${encodeURIComponent(cluster)}/namespaces`);
      if (cluster !== source.value) return;
      fill(namespaces, list.map((ns) => h('label', { class: 'choice' },
        h('input', { type: 'checkbox', name: 'namespace', value: ns, onchange: loadPvcs }), ` ${ns}`)));
    } catch (e) {
      if (cluster !== source.value) return;
      fill(namespaces);
      errors.namespace.textContent = e.message;
    }
  };
  source.addEventListener('change', loadNamespaces);
  // A field's message goes once the user changes that field.
  for (const [element, f] of [[name, 'plan-name'], [source, 'source-cluster'], [destination, 'destination-cluster'], [namespaces, 'namespace'], [pvcs, 'pvc']]) {
    element.addEventListener(element === name ? 'input' : 'change', () => {
      errors[f].textContent = '';
    });
  }

  const submit = async (event) => {
    event.preventDefault();
    showErrors({});
    formError.show(null);
    create.disabled = true;
    const plan = {
      name: name.value.trim(),
      sourceCluster: source.value,
      destinationCluster: destination.value,
      namespaces: checked('namespace'),
      pvcs: checked('pvc'),
    };
    try {
      const created = await request('POST', '/plans', plan);
      ctx.navigate(`/plans/${encodeURIComponent(created.name)}`);
    } catch (e) {
      const fields = e.fields || {};
      showErrors(fields);
      const placed = FIELDS.some((f) => fields[f]);
      const others = Object.entries(fields).filter(([f]) => !FIELDS.includes(f)).map(([f, m]) => `${f}: ${m}`);
      if (!placed || others.length) formError.show({ message: [e.message, ...others].join('; ') });
    } finally {
      create.disabled = false;
    }
  };

  main.append(
    h('h1', {}, 'New plan'),
    h('form', { class: 'plan-form', onsubmit: submit, novalidate: true },
      field('Name', name, errors['plan-name']),
      h('div', { class: 'pair' },
        field('Source cluster', source, errors['source-cluster']),
        field('Destination cluster', destination, errors['destination-cluster'])),
      h('fieldset', {}, h('legend', {}, 'Namespaces'), namespaces, errors.namespace),
      h('fieldset', {}, h('legend', {}, 'PVCs'), pvcs, errors.pvc),
      formError,
      create));

  let names = '';
  return follow('clusters', {}, (clusters) => {
    clusters.sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
    // Status changes come too; the choices change only with the names.
    const now = clusters.map((c) => c.metadata.name).join(',');
    if (now === names) return;
    names = now;
    const before = source.value;
    clusterOptions(source, clusters);
    clusterOptions(destination, clusters);
    if (source.value !== before) loadNamespaces();
  }, formError.show);
}

function field(label, input, error) {
  return h('div', { class: 'field' }, h('label', { for: input.id }, label), input, error);
}

function checked(name) {
  return [...document.querySelectorAll(`input[name="${name}"]:checked`)].map((i) => i.value);
}
