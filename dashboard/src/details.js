// The expanded view of the Pages panel (`?expand=top|entry|exit`): every page with
// its visitors, pageviews or visits, bounce rate, time on page, scroll depth, visit
// duration and exit rate, sortable by a column (`sort=metric:dir`) and in pages of
// PER_PAGE rows (`pageno=N`), all from /api/v2/query. Top pages' exit rate comes
// from a second query by exit page (the API gives exit_rate only by visit:exit_page).

import { h, fill, metricText } from './dom.js';

export const PER_PAGE = 20;

const HEADS = {
  visitors: 'Visitors',
  pageviews: 'Pageviews',
  visits: 'Visits',
  bounce_rate: 'Bounce rate',
  time_on_page: 'Time on page',
  scroll_depth: 'Scroll depth',
  visit_duration: 'Visit duration',
  exit_rate: 'Exit rate',
};

/** Each expanded list: its dimension, the metrics the API gives with it, and extras. */
export const VIEWS = {
  top: {
    title: 'Top pages',
    dim: 'event:page',
    metrics: ['visitors', 'pageviews', 'bounce_rate', 'time_on_page', 'scroll_depth'],
    extra: ['exit_rate'],
  },
  entry: { title: 'Entry pages', dim: 'visit:entry_page', metrics: ['visitors', 'visits', 'bounce_rate', 'visit_duration'], extra: [] },
  exit: { title: 'Exit pages', dim: 'visit:exit_page', metrics: ['visitors', 'visits', 'exit_rate'], extra: [] },
};

/** The sort of the view: [metric, 'asc' | 'desc'], the first metric descending by default. */
export function sortOf(view, sort) {
  const [m, dir] = String(sort || '').split(':');
  if (view.metrics.includes(m) && (dir === 'asc' || dir === 'desc')) return [m, dir];
  return [view.metrics[0], 'desc'];
}

/**
 * Loads and shows the expanded view in `el`. `ctx`: { state, query(body) -> answer
 * (the base query's site, period and filters added), go(change), addFilter(dim,
 * value), label(dim) }.
 */
export async function loadDetails(el, ctx) {
  const view = VIEWS[ctx.state.expand];
  const [by, dir] = sortOf(view, ctx.state.sort);
  const page = Math.max(1, Number(ctx.state.pageno) || 1);
  const r = await ctx.query({
    metrics: view.metrics,
    dimensions: [view.dim],
    order_by: [[by, dir], [view.dim, 'asc']],
    pagination: { limit: PER_PAGE, offset: (page - 1) * PER_PAGE },
    include: { total_rows: true },
  });
  if (!r) return false;
  const extra = new Map();
  if (view.extra.length && r.results.length) {
    const pages = r.results.map((row) => row.dimensions[0]);
    const e = await ctx.query({
      metrics: view.extra,
      dimensions: ['visit:exit_page'],
      filters: [['is', 'visit:exit_page', pages]],
      pagination: { limit: PER_PAGE },
    });
    if (!e) return false;
    for (const row of e.results) extra.set(row.dimensions[0], row.metrics);
  }
  const total = r.meta?.total_rows ?? r.results.length;
  const pages = Math.max(1, Math.ceil(total / PER_PAGE));
  const columns = view.metrics.concat(view.extra);
  const head = h(
    'tr',
    null,
    h('th', { scope: 'col' }, 'Page'),
    columns.map((m) => {
      if (!view.metrics.includes(m)) return h('th', { scope: 'col', class: 'num', title: 'from the exit pages' }, HEADS[m]);
      const active = m === by;
      const next = active && dir === 'desc' ? 'asc' : 'desc';
      return h(
        'th',
        { scope: 'col', class: 'num', 'aria-sort': active ? (dir === 'desc' ? 'descending' : 'ascending') : 'none' },
        h(
          'button',
          { type: 'button', class: 'sort', dataset: { sort: m }, onclick: () => ctx.go({ sort: `${m}:${next}`, pageno: undefined }) },
          HEADS[m],
          active ? (dir === 'desc' ? ' ↓' : ' ↑') : ''
        )
      );
    })
  );
  const body = r.results.map((row) => {
    const value = String(row.dimensions[0] ?? '');
    // A page no visit ended on is not among the exit pages: its exit rate is 0.
    const cells = row.metrics.concat(view.extra.map((_, i) => extra.get(value)?.[i] ?? 0));
    return h(
      'tr',
      null,
      h(
        'th',
        { scope: 'row' },
        h('button', { type: 'button', class: 'link page', title: `Filter: ${ctx.label(view.dim)} is ${value}`, onclick: () => ctx.addFilter(view.dim, value) }, value)
      ),
      columns.map((m, i) => h('td', { class: 'num', dataset: { metric: m, value: cells[i] ?? '' } }, metricText(m, cells[i])))
    );
  });
  const nav = h(
    'nav',
    { class: 'pager', 'aria-label': 'Pages of the list' },
    h('button', { type: 'button', id: 'prev-page', disabled: page <= 1, onclick: () => ctx.go({ pageno: page - 1 > 1 ? String(page - 1) : undefined }) }, '← Previous'),
    h('span', { class: 'muted', id: 'page-of' }, `Page ${page} of ${pages} · ${total} rows`),
    h('button', { type: 'button', id: 'next-page', disabled: page >= pages, onclick: () => ctx.go({ pageno: String(page + 1) }) }, 'Next →')
  );
  fill(
    el,
    h(
      'div',
      { class: 'card-head' },
      h('h2', { id: 'h-details' }, view.title),
      h('button', { type: 'button', class: 'link', id: 'close-details', onclick: () => ctx.go({ expand: undefined, sort: undefined, pageno: undefined }) }, '← Back to the dashboard')
    ),
    r.results.length
      ? h('div', { class: 'table-wrap' }, h('table', { class: 'details', 'aria-labelledby': 'h-details' }, h('thead', null, head), h('tbody', null, body)))
      : h('p', { class: 'empty muted' }, 'No data for this period.'),
    nav
  );
  return true;
}
