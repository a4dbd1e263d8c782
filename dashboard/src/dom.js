// A tiny element builder and the number formats of the dashboard.

/**
 * h('a', { href: '/x', class: 'y', onclick: fn }, 'text', child) builds an element.
 * Attributes set to null/undefined/false are left out; `true` sets an empty one.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** 1234 → "1.2k", 1234567 → "1.2M". */
export function compact(n) {
  if (n == null || Number.isNaN(n)) return '–';
  const abs = Math.abs(n);
  const short = (v, unit) => `${(Math.round(v * 10) / 10).toString()}${unit}`;
  if (abs >= 1e9) return short(n / 1e9, 'B');
  if (abs >= 1e6) return short(n / 1e6, 'M');
  if (abs >= 1e4) return short(n / 1e3, 'k');
  return Math.round(n).toLocaleString('en-US');
}

/** Seconds → "1m 05s", "2h 03m", "42s". */
export function duration(s) {
  if (s == null) return '–';
  s = Math.round(s);
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  const seconds = s % 60;
  const two = (v) => String(v).padStart(2, '0');
  if (hours) return `${hours}h ${two(minutes)}m`;
  if (minutes) return `${minutes}m ${two(seconds)}s`;
  return `${seconds}s`;
}

/** A metric's value as shown. */
export function metricText(metric, v) {
  if (v == null) return '–';
  switch (metric) {
    case 'bounce_rate':
    case 'conversion_rate':
    case 'exit_rate':
    case 'scroll_depth':
      return `${Math.round(v * 10) / 10}%`;
    case 'visit_duration':
    case 'time_on_page':
      return duration(v);
    case 'views_per_visit':
      return (Math.round(v * 100) / 100).toString();
    default:
      return compact(v);
  }
}
