// The main graph, drawn as SVG: the metric over time, the comparison period as a
// second, lighter line, and the bucket still filling (the one "now" falls in) drawn
// dashed. A pointer or the arrow keys move a marker that shows each bucket's value.

import { h, metricText } from './dom.3f3f47b1.js';

const NS = 'http://www.w3.org/2000/svg';
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

function svg(tag, attrs) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
}

/** A label as the x axis shows it, for the interval. */
export function shortLabel(label, interval) {
  if (!label) return '';
  const [date, time] = label.split(' ');
  const [y, m, d] = date.split('-');
  if (interval === 'minute' || interval === 'hour') return time ? time.slice(0, 5) : date;
  if (interval === 'month') return `${MONTHS[Number(m) - 1]} ${y}`;
  return `${MONTHS[Number(m) - 1]} ${Number(d)}`;
}

/** The top of the y axis: four steps of 1, 2 or 5 times a power of ten. */
function niceMax(v, whole) {
  if (!(v > 0)) return 4;
  const raw = v / 4;
  const p = 10 ** Math.floor(Math.log10(raw));
  let step = 10 * p;
  for (const f of [1, 2, 5]) {
    if (f * p >= raw) {
      step = f * p;
      break;
    }
  }
  // Counts step by whole numbers.
  return 4 * (whole ? Math.max(1, Math.ceil(step)) : step);
}

/** Metrics that are counts (whole numbers). */
const COUNTS = new Set(['visitors', 'visits', 'pageviews', 'events']);

/**
 * Draws into `box` (emptied first):
 *   labels      the buckets' labels
 *   values      the metric per bucket; null for buckets still in the future
 *   compare     the comparison period's values, or null
 *   compareLabels  the comparison buckets' labels (for the tooltip)
 *   incomplete  index of the bucket still filling, or -1
 */
export function drawChart(box, { labels, values, compare, compareLabels, incomplete, metric, interval }) {
  box.replaceChildren();
  const width = Math.max(280, box.clientWidth || 800);
  const height = width < 500 ? 180 : 240;
  const pad = { l: 48, r: 12, t: 12, b: 26 };
  const n = labels.length;
  const all = values.concat(compare || []).filter((v) => v != null);
  const max = niceMax(Math.max(0, ...all), COUNTS.has(metric));
  const x = (i) => pad.l + (n <= 1 ? (width - pad.l - pad.r) / 2 : (i * (width - pad.l - pad.r)) / (n - 1));
  const y = (v) => pad.t + (height - pad.t - pad.b) * (1 - v / max);
  const root = svg('svg', {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    class: 'chart',
    role: 'img',
    'aria-label': `${metric.replace(/_/g, ' ')} per ${interval}, ${n} points`,
  });

  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4;
    root.append(svg('line', { x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v), class: 'grid' }));
    const t = svg('text', { x: pad.l - 6, y: y(v) + 4, class: 'axis', 'text-anchor': 'end' });
    t.textContent = metricText(metric, v);
    root.append(t);
  }
  const ticks = Math.min(n, width < 500 ? 4 : 8);
  for (let k = 0; k < ticks; k++) {
    const i = ticks === 1 ? 0 : Math.round((k * (n - 1)) / (ticks - 1));
    const anchor = k === 0 ? 'start' : k === ticks - 1 ? 'end' : 'middle';
    const t = svg('text', { x: x(i), y: height - 6, class: 'axis', 'text-anchor': anchor });
    t.textContent = shortLabel(labels[i], interval);
    root.append(t);
  }

  const line = (vals, from, to) => {
    let d = '';
    for (let i = from; i <= to; i++) {
      if (vals[i] == null) continue;
      d += `${d ? 'L' : 'M'}${x(i).toFixed(1)},${y(vals[i]).toFixed(1)}`;
    }
    return d;
  };
  if (compare) root.append(svg('path', { d: line(compare, 0, n - 1), class: 'line cmp' }));
  const last = values.reduce((acc, v, i) => (v == null ? acc : i), -1);
  const solidTo = incomplete > 0 && incomplete <= last ? incomplete - 1 : last;
  if (solidTo >= 0) {
    const d = line(values, 0, solidTo);
    root.append(svg('path', { d: `${d}L${x(solidTo)},${y(0)}L${x(0)},${y(0)}Z`, class: 'area' }));
    root.append(svg('path', { d, class: 'line main' }));
  }
  if (solidTo < last) {
    root.append(svg('path', { d: line(values, Math.max(0, solidTo), last), class: 'line main incomplete' }));
  }

  // The marker and its tooltip.
  const marker = svg('line', { y1: pad.t, y2: height - pad.b, class: 'marker', visibility: 'hidden' });
  const dot = svg('circle', { r: 4, class: 'dot', visibility: 'hidden' });
  root.append(marker, dot);
  const tip = h('div', { class: 'tip', hidden: true });
  let at = -1;
  const show = (i) => {
    if (i < 0 || i >= n) return;
    at = i;
    const v = values[i];
    marker.setAttribute('x1', x(i));
    marker.setAttribute('x2', x(i));
    marker.setAttribute('visibility', 'visible');
    if (v != null) {
      dot.setAttribute('cx', x(i));
      dot.setAttribute('cy', y(v));
      dot.setAttribute('visibility', 'visible');
    } else dot.setAttribute('visibility', 'hidden');
    tip.replaceChildren(
      h('strong', null, labels[i]),
      h('span', null, `${metricText(metric, v)}${i === incomplete ? ' (so far)' : ''}`),
      compare ? h('span', { class: 'muted' }, `${compareLabels?.[i] ?? ''}: ${metricText(metric, compare[i])}`) : null
    );
    tip.hidden = false;
    const left = Math.min(Math.max(x(i) - 70, 0), width - 150);
    tip.style.setProperty('left', `${left}px`);
  };
  const hide = () => {
    marker.setAttribute('visibility', 'hidden');
    dot.setAttribute('visibility', 'hidden');
    tip.hidden = true;
  };
  root.addEventListener('pointermove', (e) => {
    const r = root.getBoundingClientRect();
    const px = ((e.clientX - r.left) * width) / r.width;
    const i = n <= 1 ? 0 : Math.round(((px - pad.l) * (n - 1)) / (width - pad.l - pad.r));
    show(Math.min(n - 1, Math.max(0, i)));
  });
  root.addEventListener('pointerleave', hide);
  const wrap = h('div', {
    class: 'chart-wrap',
    tabindex: 0,
    'aria-label': 'Graph: use the left and right arrow keys to read each point',
    onkeydown: (e) => {
      if (e.key === 'ArrowRight') show(at < 0 ? 0 : Math.min(n - 1, at + 1));
      else if (e.key === 'ArrowLeft') show(at < 0 ? n - 1 : Math.max(0, at - 1));
      else if (e.key === 'Escape') hide();
      else return;
      e.preventDefault();
    },
    onblur: hide,
  });
  wrap.append(root, tip);
  box.append(wrap);
}
