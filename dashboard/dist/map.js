// The world map of the Locations panel: countries shaded by visitors, drawn as
// inline SVG from the shapes in world.js (loaded on first use, so a dashboard that
// never shows the map never fetches them). A country with visitors can be focused
// with Tab, shows its name and count on hover or focus, and filters the dashboard
// by itself on a click, Enter or Space.

import { compact, h } from './dom.3f3f47b1.js';

const NS = 'http://www.w3.org/2000/svg';
/** Shades of visited countries (CSS classes l1..l5), darkest = most visitors. */
const LEVELS = 5;

let shapes = null;

/** The countries' SVG paths by ISO code, built once. */
async function load() {
  if (shapes) return shapes;
  const w = await import('./world.672eb840.js');
  const arcs = w.ARCS.split('|').map((arc) => {
    const pts = [];
    let x = 0;
    let y = 0;
    for (const pair of arc ? arc.split(' ') : []) {
      const [dx, dy] = pair.split(',');
      x += Number(dx);
      y += Number(dy);
      pts.push([x, y]);
    }
    return pts;
  });
  const paths = new Map();
  for (const entry of w.COUNTRIES.split(';')) {
    const [code, rings] = entry.split(':');
    let d = '';
    for (const ring of rings.split(',')) d += ringPath(ring.split(' ').map(Number), arcs, w.WIDTH);
    paths.set(code, d);
  }
  shapes = { width: w.WIDTH, height: w.HEIGHT, paths };
  return shapes;
}

/**
 * One ring as SVG subpaths. A ring that crosses the map's edge (the antimeridian:
 * a step of more than half the width) is cut there into pieces, one per side, each
 * closed along the edge.
 */
function ringPath(refs, arcs, width) {
  const pts = [];
  for (const n of refs) {
    const arc = n < 0 ? arcs[~n].slice().reverse() : arcs[n];
    pts.push(...(pts.length ? arc.slice(1) : arc));
  }
  if (pts.length < 3) return '';
  const jump = (i) => Math.abs(pts[i][0] - pts[(i + 1) % pts.length][0]) > width / 2;
  const cuts = pts.map((_, i) => i).filter(jump);
  // Start after a cut, so every piece is one run of points.
  const start = cuts.length ? cuts[0] + 1 : 0;
  let d = '';
  let open = false;
  for (let k = 0; k < pts.length; k++) {
    const i = (start + k) % pts.length;
    const [x, y] = pts[i];
    d += `${open ? 'L' : 'M'}${x} ${y}`;
    open = true;
    if (cuts.includes(i)) {
      d += 'Z';
      open = false;
    }
  }
  return open ? `${d}Z` : d;
}

function svg(tag, attrs) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
}

/**
 * Draws the map into `box`: `rows` are [{ code, name, visitors }], `pick(code)` is
 * called when a country is chosen.
 */
export async function drawMap(box, rows, pick) {
  const { width, height, paths } = await load();
  const byCode = new Map(rows.map((r) => [r.code, r]));
  const top = Math.max(1, ...rows.map((r) => r.visitors));
  const names = typeof Intl.DisplayNames === 'function' ? new Intl.DisplayNames(['en'], { type: 'region' }) : null;
  const nameOf = (code) => byCode.get(code)?.name || names?.of(code) || code;
  const map = svg('svg', { class: 'map', viewBox: `0 0 ${width} ${height}`, role: 'group', 'aria-label': 'Visitors by country' });
  const tip = h('div', { class: 'tip map-tip', hidden: true, 'aria-hidden': 'true' });
  const show = (code, path) => {
    const r = byCode.get(code);
    tip.textContent = `${nameOf(code)}: ${compact(r?.visitors ?? 0)} visitor${r?.visitors === 1 ? '' : 's'}`;
    tip.hidden = false;
    const b = path.getBoundingClientRect();
    const o = box.getBoundingClientRect();
    const left = Math.min(Math.max(0, b.left - o.left + b.width / 2 - 75), o.width - 150);
    tip.style.setProperty('left', `${left}px`);
    tip.style.setProperty('top', `${Math.max(0, b.top - o.top - 34)}px`);
  };
  const hide = () => {
    tip.hidden = true;
  };
  // Visited countries last, so their outline is drawn over their neighbours'.
  const codes = [...paths.keys()].sort((a, b) => (byCode.get(a)?.visitors || 0) - (byCode.get(b)?.visitors || 0));
  for (const code of codes) {
    const d = paths.get(code);
    if (!d) continue;
    const r = byCode.get(code);
    const level = r && r.visitors > 0 ? 1 + Math.min(LEVELS - 1, Math.floor(LEVELS * Math.sqrt(r.visitors / top) - 1e-9)) : 0;
    const path = svg('path', { d, class: `country l${level}`, 'data-code': code });
    const title = svg('title', {});
    title.textContent = `${nameOf(code)}: ${r ? r.visitors : 0} visitors`;
    path.append(title);
    if (level) {
      path.setAttribute('tabindex', '0');
      path.setAttribute('role', 'button');
      path.setAttribute('aria-label', `${nameOf(code)}: ${r.visitors} visitors. Filter by this country`);
      path.addEventListener('click', () => pick(code));
      path.addEventListener('keydown', (e) => {
        if (e.key === 'Enter' || e.key === ' ') {
          e.preventDefault();
          pick(code);
        }
      });
      path.addEventListener('focus', () => show(code, path));
      path.addEventListener('blur', hide);
    }
    path.addEventListener('pointerenter', () => show(code, path));
    path.addEventListener('pointerleave', hide);
    map.append(path);
  }
  const legend = h(
    'p',
    { class: 'map-legend muted', 'aria-hidden': 'true' },
    h('span', null, '0'),
    Array.from({ length: LEVELS + 1 }, (_, i) => h('span', { class: `swatch l${i}` })),
    h('span', null, compact(top))
  );
  box.replaceChildren(h('div', { class: 'map-wrap' }, map, tip), legend);
}
