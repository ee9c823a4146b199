// The throughput chart: the sum of the volumes' rates over time, drawn
// as inline SVG from the samples the page collects (at most MAX_POINTS).

import { h } from '../dom.js';
import { bytes } from '../format.js';

const SVG = 'http://www.w3.org/2000/svg';
const MAX_POINTS = 120;
const WIDTH = 600;
const HEIGHT = 160;

function svg(tag, attributes = {}, text = null) {
  const element = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attributes)) element.setAttribute(k, String(v));
  if (text !== null) element.textContent = text;
  return element;
}

/** A chart element with `add(time, bytesPerSecond)`. */
export function throughputChart() {
  const points = [];
  const plot = svg('svg', { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: 'img', 'aria-label': 'throughput over time', preserveAspectRatio: 'none' });
  const caption = h('figcaption', { class: 'muted' }, 'Throughput: no samples yet.');
  const figure = h('figure', { id: 'throughput', class: 'chart' }, plot, caption);
  figure.dataset.points = '0';

  figure.add = (t, rate) => {
    const last = points[points.length - 1];
    if (last && last.t === t) return;
    points.push({ t, rate: Math.max(0, Number(rate) || 0) });
    if (points.length > MAX_POINTS) points.shift();
    draw();
  };

  function draw() {
    plot.replaceChildren();
    figure.dataset.points = String(points.length);
    const peak = Math.max(...points.map((p) => p.rate));
    const top = Math.max(1, peak);
    const t0 = points[0].t;
    const span = Math.max(1, points[points.length - 1].t - t0);
    const x = (p) => ((p.t - t0) / span) * WIDTH;
    const y = (p) => HEIGHT - 4 - (p.rate / top) * (HEIGHT - 8);
    for (const f of [0.25, 0.5, 0.75]) {
      plot.append(svg('line', { x1: 0, x2: WIDTH, y1: HEIGHT * f, y2: HEIGHT * f, class: 'grid' }));
    }
    if (points.length > 1) {
      const line = points.map((p) => `${x(p).toFixed(1)},${y(p).toFixed(1)}`).join(' ');
      plot.append(svg('polygon', { points: `0,${HEIGHT} ${line} ${WIDTH},${HEIGHT}`, class: 'area' }));
      plot.append(svg('polyline', { points: line, class: 'line' }));
    }
    const now = points[points.length - 1].rate;
    caption.textContent = `Throughput now ${bytes(now)}/s, peak ${bytes(peak)}/s, over ${Math.round(span / 1000)}s (${points.length} samples).`;
  }
  return figure;
}
