// hush's own panels, beside Plausible's: "Not counted" (the bots and opted-out hits
// hush dropped or stored anonymously, from POST /api/hush/dropped) and "What we
// collect" (the site's privacy settings as hush runs them, from
// GET /api/hush/sites/{site}/policy). Each returns its card at once and fills it
// when its answer comes; `track` is the page's load counter (body[data-state]).

import { call } from './api.576ea9c9.js';
import { compact, fill, h } from './dom.3f3f47b1.js';

/** What each reason of the `dropped` table means, in the order shown. */
const REASONS = [
  ['bot', 'Bots and crawlers', 'dropped'],
  ['dnt', 'Do Not Track', 'dropped'],
  ['gpc', 'Global Privacy Control', 'dropped'],
  ['no_visit', 'Engagement without a visit', 'dropped'],
  ['dnt_anonymous', 'Do Not Track', 'counted without a visitor'],
  ['gpc_anonymous', 'Global Privacy Control', 'counted without a visitor'],
];
/** Bot families listed at most. */
const FAMILIES = 6;

const POLICY_WORDS = {
  anonymous: 'counted anonymously (no visitor id, no visit)',
  drop: 'not stored (counted under Not counted)',
  ignore: 'treated like any other hit',
};

function card(id, title) {
  const body = h('div', { class: 'panel-body' });
  const el = h(
    'section',
    { class: 'panel card', id: `panel-${id}`, 'aria-labelledby': `h-${id}`, 'aria-busy': 'true' },
    h('div', { class: 'card-head' }, h('h2', { id: `h-${id}` }, title)),
    body
  );
  fill(body, h('p', { class: 'muted' }, 'Loading…'));
  return { el, body };
}

function failed(el, body, e) {
  el.removeAttribute('aria-busy');
  fill(body, h('p', { class: 'error', role: 'alert' }, `This panel could not be loaded: ${e.message}`));
}

/** Count rows with a bar, like the other panels' (not clickable: nothing to filter). */
function countRows(list) {
  const top = Math.max(1, ...list.map((r) => r.hits));
  return h(
    'div',
    { class: 'rows' },
    h(
      'ol',
      null,
      list.map((r) => {
      const bar = h('span', { class: 'fillbar', 'aria-hidden': 'true' });
      bar.style.setProperty('--w', `${(r.hits * 100) / top}%`);
      return h(
        'li',
        { class: 'row', dataset: r.data },
        bar,
        h('span', { class: 'label' }, r.label, r.note ? h('span', { class: 'muted' }, ` · ${r.note}`) : null),
        h('span', { class: 'num', title: String(r.hits), dataset: { hits: String(r.hits) } }, compact(r.hits))
        );
      })
    )
  );
}

/** "Not counted": hits per reason over the period, and the top bot families. */
export function notCounted({ site, dateRange, signal, track }) {
  const { el, body } = card('not-counted', 'Not counted');
  track(async () => {
    let r;
    try {
      r = await call('/api/hush/dropped', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ site_id: site, date_range: dateRange }),
        signal,
      });
    } catch (e) {
      if (e.name !== 'AbortError') failed(el, body, e);
      return;
    }
    el.removeAttribute('aria-busy');
    const byReason = new Map();
    const byFamily = new Map();
    for (const row of r.results) {
      byReason.set(row.reason, (byReason.get(row.reason) || 0) + row.hits);
      if (row.reason === 'bot') {
        const family = row.family || 'unnamed';
        byFamily.set(family, (byFamily.get(family) || 0) + row.hits);
      }
    }
    const reasons = REASONS.filter(([key]) => byReason.get(key)).map(([key, label, note]) => ({
      label,
      note,
      hits: byReason.get(key),
      data: { reason: key },
    }));
    const families = [...byFamily]
      .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
      .slice(0, FAMILIES)
      .map(([family, hits]) => ({ label: family, hits, data: { family } }));
    const note = h('p', { class: 'muted small' }, 'Hits hush did not count as a visitor\u2019s, per UTC day; none of them is in the numbers above as a visitor.');
    if (!reasons.length) {
      fill(body, h('p', { class: 'empty muted' }, 'No bot or opted-out hit in this period.'), note);
      return;
    }
    fill(
      body,
      countRows(reasons),
      families.length ? [h('h3', { class: 'subhead' }, 'Top bot families'), countRows(families)] : null,
      note
    );
  });
  return el;
}

/** "What we collect": the site's settings as this hush runs them. */
export function whatWeCollect({ site, signal, track }) {
  const { el, body } = card('policy', 'What we collect');
  track(async () => {
    let p;
    try {
      p = await call(`/api/hush/sites/${encodeURIComponent(site)}/policy`, { signal });
    } catch (e) {
      if (e.name !== 'AbortError') failed(el, body, e);
      return;
    }
    el.removeAttribute('aria-busy');
    const item = (key, term, ...value) => [h('dt', null, term), h('dd', { dataset: { policy: key } }, ...value)];
    fill(
      body,
      h(
        'dl',
        { class: 'policy' },
        item('retention', 'Kept for', `${p.retention_days} days, then deleted`),
        item('ip', 'Addresses', `cut to /${p.ipv4_prefix} (IPv4) and /${p.ipv6_prefix} (IPv6) before anything else sees them`),
        item('salt', 'Visitor ids', `hashed with a salt that rotates ${p.salt_rotation}`),
        item('dnt', 'Do Not Track', POLICY_WORDS[p.dnt] || p.dnt),
        item('gpc', 'Global Privacy Control', POLICY_WORDS[p.gpc] || p.gpc),
        item('cookies', 'Cookies', p.cookies ? 'set' : 'none for visitors')
      ),
      h('h3', { class: 'subhead' }, 'Collected'),
      h('ul', { class: 'plain', dataset: { policy: 'collected' } }, p.collected.map((c) => h('li', null, c))),
      h('h3', { class: 'subhead' }, 'Never stored'),
      h('ul', { class: 'plain', dataset: { policy: 'never' } }, p.never_stored.map((c) => h('li', null, c)))
    );
  });
  return el;
}
