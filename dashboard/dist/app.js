// The dashboard: `/` lists the sites this reader may open, `/{site}` is a site's
// dashboard. Everything on screen comes from hush's own Stats API; the whole view
// (period, comparison, filters, tabs) is in the query string.

import * as api from './api.576ea9c9.js';
import { drawChart } from './chart.9857fe25.js';
import { loadDetails } from './details.b043a200.js';
import { drawMap } from './map.9e658d97.js';
import { compact, fill, h, metricText } from './dom.3f3f47b1.js';
import * as extra from './panels-extra.c76e5a72.js';
import * as st from './state.645dfbee.js';

/** How often the realtime view (and the current-visitors count) refreshes. */
const REFRESH_MS = 60000;
/** Rows per panel. */
const ROWS = 9;

const root = document.getElementById('app');
const site = decodeURIComponent(location.pathname.replace(/^\/+|\/+$/g, ''));

const TOP = [
  ['visitors', 'Unique visitors'],
  ['visits', 'Total visits'],
  ['pageviews', 'Total pageviews'],
  ['views_per_visit', 'Views per visit'],
  ['bounce_rate', 'Bounce rate'],
  ['visit_duration', 'Visit duration'],
  ['time_on_page', 'Time on page'],
  ['scroll_depth', 'Scroll depth'],
  ['conversion_rate', 'Conversion rate'],
];
const NAMES = Object.fromEntries(TOP.concat([['events', 'Events'], ['current', 'Current visitors']]));
/** Column heads of the panels: short. */
const COLUMNS = { visitors: 'Visitors', visits: 'Visits', pageviews: 'Pageviews', events: 'Events', conversion_rate: 'CR' };
/** Metrics where going down is good news. */
const LOWER_IS_BETTER = new Set(['bounce_rate']);

const tab = (id, label, dims, metrics = ['visitors'], labelOf = null) => ({ id, label, dims, metrics, labelOf });
/** "Firefox 120" from [version, browser]. */
const versionLabel = (dims) => `${dims[1]} ${dims[0]}`;
const PANELS = [
  {
    key: 'sources',
    title: 'Sources',
    tabs: [
      tab('channels', 'Channels', ['visit:channel']),
      tab('sources', 'Sources', ['visit:source']),
      tab('utm_medium', 'Medium', ['visit:utm_medium']),
      tab('utm_source', 'Source', ['visit:utm_source']),
      tab('utm_campaign', 'Campaign', ['visit:utm_campaign']),
      tab('utm_term', 'Term', ['visit:utm_term']),
      tab('utm_content', 'Content', ['visit:utm_content']),
    ],
  },
  {
    key: 'pages',
    title: 'Pages',
    expandable: true,
    tabs: [
      tab('top', 'Top pages', ['event:page'], ['visitors', 'pageviews']),
      tab('entry', 'Entry pages', ['visit:entry_page'], ['visitors', 'visits']),
      tab('exit', 'Exit pages', ['visit:exit_page'], ['visitors', 'visits']),
    ],
  },
  {
    key: 'locations',
    title: 'Locations',
    tabs: [
      tab('countries', 'Countries', ['visit:country', 'visit:country_name']),
      { ...tab('map', 'Map', ['visit:country', 'visit:country_name']), limit: 300, render: renderMap },
      tab('regions', 'Regions', ['visit:region', 'visit:region_name']),
      tab('cities', 'Cities', ['visit:city', 'visit:city_name']),
    ],
  },
  {
    key: 'devices',
    title: 'Devices',
    tabs: [
      tab('browser', 'Browsers', ['visit:browser']),
      tab('browser_version', 'Versions', ['visit:browser_version', 'visit:browser'], ['visitors'], versionLabel),
      tab('os', 'OS', ['visit:os']),
      tab('os_version', 'OS versions', ['visit:os_version', 'visit:os'], ['visitors'], versionLabel),
      tab('device', 'Devices', ['visit:device']),
    ],
  },
];

let state = st.readState(location.search);
let info = { domain: site, timezone: 'UTC' };
let goals = [];
let controller = null;
let generation = 0;
let timer = null;
let pending = 0;
/** Redraws the graph when its box changes width. */
let resizer = null;

/** Whether a site's dashboard was rendered, and its first fill marked. */
let rendered = false;
let marked = false;

function setBusy(delta) {
  pending += delta;
  document.body.dataset.state = pending > 0 ? 'loading' : 'ready';
  if (pending === 0 && rendered && !marked) markFilled();
}

/** Every panel of the first view has its answer: the mark the benchmark reads. */
function markFilled() {
  marked = true;
  performance.mark('hush:filled');
}

/** Runs `work` as part of the current load; its answer is dropped if a newer load started. */
async function track(work) {
  const mine = generation;
  setBusy(1);
  try {
    return await work(mine);
  } finally {
    setBusy(-1);
  }
}

function errorText(e) {
  if (e.status === 401 || e.status === 403) return `You may not read the stats of ${site}.`;
  if (e.status === 429) return 'Too many requests: wait a minute and reload.';
  return `The stats could not be loaded: ${e.message}`;
}

// ---------------------------------------------------------------------------
// Navigation.

function go(change, { replace = false } = {}) {
  state = { ...state, ...change };
  const url = `${location.pathname}${st.writeState(state)}`;
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  render();
}

function addFilter(dim, value, op = 'is') {
  const filters = state.filters.filter((f) => f.dim !== dim);
  filters.push({ op, dim, value });
  go({ filters });
}

function removeFilter(i) {
  go({ filters: state.filters.filter((_, j) => j !== i) });
}

addEventListener('popstate', () => {
  state = st.readState(location.search);
  render();
});

// ---------------------------------------------------------------------------
// Queries.

function base(extra = {}) {
  const body = {
    site_id: site,
    date_range: st.dateRange(state, info.timezone),
    filters: st.apiFilters(state),
    ...extra,
  };
  if (state.compare && !['realtime', 'all'].includes(state.period) && extra.compare !== false) {
    body.include = { ...(body.include || {}), comparisons: { mode: state.compare } };
  }
  delete body.compare;
  return body;
}

function topMetrics() {
  if (state.period === 'realtime') return ['visitors', 'pageviews'];
  const onPage = state.filters.some((f) => f.dim === 'event:page');
  const onGoal = state.filters.some((f) => f.dim === 'event:goal');
  const m = ['visitors', 'visits', 'pageviews'];
  if (!onPage) m.push('views_per_visit');
  m.push('bounce_rate', 'visit_duration');
  if (onPage) m.push('time_on_page', 'scroll_depth');
  if (onGoal) m.push('conversion_rate');
  return m;
}

function graphMetric() {
  const allowed = topMetrics();
  return allowed.includes(state.metric) ? state.metric : 'visitors';
}

// ---------------------------------------------------------------------------
// The page.

function header() {
  const periodSel = h(
    'select',
    { id: 'period', 'aria-label': 'Period' },
    st.PERIODS.map(([v, label]) => h('option', { value: v, selected: v === state.period }, label))
  );
  const custom = h(
    'form',
    { class: 'custom', id: 'custom', hidden: state.period !== 'custom' },
    h('label', null, 'From ', h('input', { type: 'date', name: 'from', required: true, value: state.from || '' })),
    h('label', null, 'To ', h('input', { type: 'date', name: 'to', required: true, value: state.to || '' })),
    h('button', { type: 'submit' }, 'Apply')
  );
  custom.addEventListener('submit', (e) => {
    e.preventDefault();
    const from = custom.elements.from.value;
    const to = custom.elements.to.value;
    if (from && to && from <= to) go({ period: 'custom', from, to, interval: undefined });
  });
  periodSel.addEventListener('change', () => {
    if (periodSel.value === 'custom') {
      custom.hidden = false;
      custom.elements.from.focus();
    } else go({ period: periodSel.value, interval: undefined });
  });
  const noCompare = ['realtime', 'all'].includes(state.period);
  const compareSel = h(
    'select',
    { id: 'compare', 'aria-label': 'Comparison', disabled: noCompare },
    st.COMPARISONS.map(([v, label]) => h('option', { value: v, selected: v === state.compare }, label))
  );
  compareSel.addEventListener('change', () => go({ compare: compareSel.value }));
  const current = h(
    'a',
    { class: 'current', id: 'current', href: `?${new URLSearchParams({ period: 'realtime' })}` },
    h('span', { class: 'pulse', 'aria-hidden': 'true' }),
    h('span', { class: 'current-n' }, '…'),
    ' current visitors'
  );
  current.addEventListener('click', (e) => {
    e.preventDefault();
    go({ period: 'realtime', interval: undefined });
  });
  return h(
    'header',
    { class: 'bar' },
    h('div', { class: 'title' }, h('a', { href: '/', class: 'home' }, 'hush'), h('h1', null, site), current),
    h('div', { class: 'controls' }, periodSel, compareSel, filterButton()),
    custom
  );
}

function filterButton() {
  const editor = h(
    'form',
    { class: 'editor', id: 'editor', hidden: true, 'aria-label': 'Add a filter' },
    h(
      'select',
      { name: 'dim', 'aria-label': 'Dimension' },
      Object.entries(st.DIMENSIONS).map(([v, label]) => h('option', { value: v }, label)),
      h('option', { value: 'prop' }, 'Custom property…')
    ),
    h('input', { name: 'prop', placeholder: 'property', 'aria-label': 'Property name', hidden: true }),
    h(
      'select',
      { name: 'op', 'aria-label': 'Operator' },
      st.OPERATORS.map(([v, label]) => h('option', { value: v }, label))
    ),
    h('input', { name: 'value', required: true, placeholder: 'value', 'aria-label': 'Value' }),
    h('button', { type: 'submit' }, 'Add')
  );
  const dim = editor.elements.dim;
  dim.addEventListener('change', () => {
    editor.elements.prop.hidden = dim.value !== 'prop';
  });
  editor.addEventListener('submit', (e) => {
    e.preventDefault();
    const f = editor.elements;
    const d = f.dim.value === 'prop' ? `event:props:${f.prop.value.trim()}` : f.dim.value;
    if (d === 'event:props:' || !f.value.value) return;
    addFilter(d, f.value.value, f.op.value);
  });
  editor.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') {
      editor.hidden = true;
      toggle.setAttribute('aria-expanded', 'false');
      toggle.focus();
    }
  });
  const toggle = h('button', { type: 'button', id: 'add-filter', 'aria-expanded': 'false', 'aria-controls': 'editor' }, '+ Filter');
  toggle.addEventListener('click', () => {
    editor.hidden = !editor.hidden;
    toggle.setAttribute('aria-expanded', String(!editor.hidden));
    if (!editor.hidden) editor.elements.dim.focus();
  });
  return h('div', { class: 'filter-add' }, toggle, editor);
}

function filterBar() {
  if (!state.filters.length) return null;
  const ops = Object.fromEntries(st.OPERATORS);
  return h(
    'ul',
    { class: 'filters', 'aria-label': 'Filters' },
    state.filters.map((f, i) =>
      h(
        'li',
        { class: 'chip' },
        h('span', null, `${st.dimensionLabel(f.dim)} ${ops[f.op]} `, h('strong', null, f.value)),
        h(
          'button',
          {
            type: 'button',
            class: 'remove',
            'aria-label': `Remove filter ${st.dimensionLabel(f.dim)} ${ops[f.op]} ${f.value}`,
            onclick: () => removeFilter(i),
          },
          '×'
        )
      )
    ),
    state.filters.length > 1
      ? h('li', null, h('button', { type: 'button', class: 'link', onclick: () => go({ filters: [] }) }, 'Clear all'))
      : null
  );
}

function render() {
  generation++;
  if (controller) controller.abort();
  controller = new AbortController();
  clearTimeout(timer);
  const focused = document.activeElement && document.activeElement.id;
  document.title = `${site} · ${st.PERIODS.find(([p]) => p === state.period)[1]} · hush`;
  rendered = true;
  if (state.expand) return renderDetails(focused);
  const stats = h('section', { class: 'stats card', id: 'top-stats', 'aria-label': 'Top stats' });
  const graph = h('section', { class: 'graph card', id: 'graph', 'aria-label': 'Graph' });
  const panels = PANELS.map((p) => panel(p));
  const goalsCard = h('section', { class: 'panel card', id: 'panel-goals', 'aria-labelledby': 'h-goals' });
  const propsCard = h('section', { class: 'panel card', id: 'panel-props', 'aria-labelledby': 'h-props' });
  const main = h('main', { id: 'main' }, stats, graph, h('div', { class: 'grid' }, panels.map((p) => p.el), goalsCard, propsCard));
  fill(root, header(), filterBar(), main);
  main.append(hushPanels(controller.signal));
  if (focused) document.getElementById(focused)?.focus();

  const signal = controller.signal;
  loadCurrent(signal);
  loadTop(stats, main, signal);
  loadGraph(graph, signal);
  for (const p of panels) p.load(signal);
  loadGoals(goalsCard, signal);
  loadProps(propsCard, signal);
  timer = setTimeout(function again() {
    if (document.visibilityState !== 'visible') timer = setTimeout(again, REFRESH_MS);
    else if (state.period === 'realtime') render();
    else {
      loadCurrent(controller.signal);
      timer = setTimeout(again, REFRESH_MS);
    }
  }, REFRESH_MS);
}

function loading(el) {
  el.setAttribute('aria-busy', 'true');
  el.classList.add('loading');
}

function done(el) {
  el.removeAttribute('aria-busy');
  el.classList.remove('loading');
}

function failed(el, e, title) {
  done(el);
  fill(
    el,
    title ? h('h2', null, title) : null,
    h('p', { class: 'error', role: 'alert' }, errorText(e), ' ', h('button', { type: 'button', class: 'link', onclick: () => render() }, 'Retry'))
  );
}

function loadCurrent(signal) {
  track(async (mine) => {
    const n = document.querySelector('#current .current-n');
    try {
      const r = await api.query(
        { site_id: site, metrics: ['visitors'], date_range: st.lastFiveMinutes(), filters: st.apiFilters(state) },
        signal
      );
      if (mine !== generation || !n) return;
      const v = r.results[0]?.metrics[0] ?? 0;
      n.textContent = compact(v);
      n.dataset.value = v;
      const big = document.querySelector('[data-metric="current"] .value');
      if (big) {
        big.textContent = compact(v);
        big.dataset.value = v;
      }
    } catch (e) {
      if (e.name !== 'AbortError' && mine === generation && n) n.textContent = '–';
    }
  });
}

function stat(metric, value, change, selectable) {
  const up = change > 0;
  const good = LOWER_IS_BETTER.has(metric) ? !up : up;
  const changeEl =
    change == null || change === 0
      ? change === 0
        ? h('span', { class: 'change flat' }, '0%')
        : null
      : h(
          'span',
          { class: `change ${good ? 'good' : 'bad'}`, title: 'against the comparison period' },
          `${up ? '↑' : '↓'} ${Math.abs(change)}${metric.endsWith('_rate') ? ' pp' : '%'}`
        );
  const attrs = { class: 'stat', dataset: { metric } };
  const inner = [
    h('span', { class: 'name' }, NAMES[metric]),
    h('span', { class: 'value', dataset: { value: value ?? '' }, title: value == null ? null : String(value) }, metricText(metric, value)),
    changeEl,
  ];
  if (!selectable) return h('div', attrs, inner);
  return h(
    'button',
    {
      ...attrs,
      type: 'button',
      'aria-pressed': String(graphMetric() === metric),
      onclick: () => go({ metric }, { replace: true }),
    },
    inner
  );
}

function loadTop(el, main, signal) {
  loading(el);
  track(async (mine) => {
    const metrics = topMetrics();
    let r;
    try {
      r = await api.query(base({ metrics }), signal);
    } catch (e) {
      if (e.name === 'AbortError' || mine !== generation) return;
      if (e.status === 401 || e.status === 403) {
        fill(main, h('section', { class: 'card notice' }, h('h2', null, 'No access'), h('p', { role: 'alert' }, errorText(e))));
        return;
      }
      return failed(el, e);
    }
    if (mine !== generation) return;
    done(el);
    const row = r.results[0] || { metrics: metrics.map(() => 0) };
    const cells = metrics.map((m, i) => stat(m, row.metrics[i], row.comparison?.change?.[i], state.period !== 'realtime' && st.GRAPH_METRICS.includes(m)));
    if (state.period === 'realtime') cells.unshift(stat('current', null, null, false));
    fill(el, cells);
    if (state.period === 'realtime') {
      const n = document.querySelector('#current .current-n');
      const big = el.querySelector('[data-metric="current"] .value');
      if (n?.dataset.value) {
        big.textContent = n.textContent;
        big.dataset.value = n.dataset.value;
      }
    }
    const visitors = row.metrics[metrics.indexOf('visitors')];
    const pageviews = row.metrics[metrics.indexOf('pageviews')];
    if (!visitors && !pageviews && !state.filters.length) {
      const all = await api.query({ site_id: site, metrics: ['pageviews'], date_range: 'all' }, signal).catch(() => null);
      if (mine === generation && all && !(all.results[0]?.metrics[0] > 0)) fill(main, install());
    }
  });
}

function install() {
  const snippet = `<script defer data-domain="${site}" src="${location.origin}/js/script.js"></script>`;
  const code = h('code', null, snippet);
  const copy = h('button', { type: 'button' }, 'Copy');
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(snippet);
      copy.textContent = 'Copied';
    } catch {
      getSelection().selectAllChildren(code);
    }
  });
  return h(
    'section',
    { class: 'card notice', id: 'install' },
    h('h2', null, `Waiting for the first visit to ${site}`),
    h('p', null, 'hush has no hits for this site yet. Add this line to the ', h('code', null, '<head>'), ' of every page of the site:'),
    h('pre', null, code),
    copy,
    h('p', { class: 'muted' }, 'Visits show here within seconds. The script sets no cookie and stores nothing on the visitor\u2019s device.')
  );
}

function loadGraph(el, signal) {
  loading(el);
  const metric = graphMetric();
  const iv = st.interval(state);
  const realtime = state.period === 'realtime';
  const ivSel = h(
    'select',
    { id: 'interval', 'aria-label': 'Interval' },
    st.intervals(state.period).map((v) => h('option', { value: v, selected: v === iv }, v[0].toUpperCase() + v.slice(1)))
  );
  ivSel.addEventListener('change', () => go({ interval: ivSel.value }, { replace: true }));
  const box = h('div', { class: 'chart-box' });
  const legend = h('p', { class: 'legend muted' });
  fill(el, h('div', { class: 'card-head' }, h('h2', null, realtime ? 'Visitors in the last 30 minutes' : NAMES[metric]), ivSel), box, legend);
  track(async (mine) => {
    let r;
    try {
      r = await api.query(
        base({ metrics: [realtime ? 'visitors' : metric], dimensions: [`time:${iv}`], include: { time_labels: true } }),
        signal
      );
    } catch (e) {
      if (e.name === 'AbortError' || mine !== generation) return;
      return failed(box, e);
    }
    if (mine !== generation) return;
    done(el);
    const labels = r.meta.time_labels || r.results.map((row) => row.dimensions[0]);
    const byLabel = new Map(r.results.map((row) => [row.dimensions[0], row]));
    const now = st.nowLabel(info.timezone, iv);
    const open = st.reachesToday(state, info.timezone);
    let incomplete = -1;
    const values = labels.map((l, i) => {
      if (open && l > now && !realtime) return null;
      if (open && l <= now) incomplete = i;
      return byLabel.get(l)?.metrics[0] ?? 0;
    });
    if (realtime) incomplete = labels.length - 1;
    const hasCompare = r.results.some((row) => row.comparison);
    const compare = hasCompare ? labels.map((l) => byLabel.get(l)?.comparison?.metrics[0] ?? 0) : null;
    const compareLabels = hasCompare ? labels.map((l) => byLabel.get(l)?.comparison?.dimensions?.[0] ?? '') : null;
    const draw = () =>
      drawChart(box, { labels, values, compare, compareLabels, incomplete: open ? incomplete : -1, metric: realtime ? 'visitors' : metric, interval: iv });
    draw();
    if (resizer) resizer.disconnect();
    resizer = new ResizeObserver(() => {
      if (Math.abs((box.clientWidth || 0) - (box.firstChild?.firstChild?.getAttribute('width') || 0)) > 8) draw();
    });
    resizer.observe(box);
    const range = r.query?.date_range;
    fill(
      legend,
      range ? `${range[0].slice(0, 10)} – ${range[1].slice(0, 10)} (${info.timezone})` : '',
      open && incomplete >= 0 ? ' · dashed: the current period, still filling' : '',
      hasCompare && r.meta.comparison_date_range
        ? ` · grey: ${r.meta.comparison_date_range[0].slice(0, 10)} – ${r.meta.comparison_date_range[1].slice(0, 10)}`
        : ''
    );
  });
}

/** A list of rows: the first metric drawn as a bar; a click filters by the row. */
function rows(list, { metrics, filterDim, labelAt = 0, valueAt = 0, labelOf = null }) {
  if (!list.length) return h('p', { class: 'empty muted' }, 'No data for this period.');
  const top = Math.max(1, ...list.map((r) => r.metrics[0] || 0));
  return h(
    'div',
    { class: 'rows' },
    h('div', { class: 'row head', 'aria-hidden': 'true' }, h('span', { class: 'label' }, ''), metrics.map((m) => h('span', { class: 'num', title: NAMES[m] }, COLUMNS[m] || m))),
    h(
      'ol',
      null,
      list.map((r) => {
        const label = labelOf ? labelOf(r.dimensions) : String(r.dimensions[labelAt] ?? '');
        const value = String(r.dimensions[valueAt] ?? '');
        const bar = h('span', { class: 'fillbar', 'aria-hidden': 'true' });
        bar.style.setProperty('--w', `${((r.metrics[0] || 0) * 100) / top}%`);
        const inner = [bar, h('span', { class: 'label' }, label), metrics.map((m, i) => h('span', { class: 'num', title: String(r.metrics[i]) }, metricText(m, r.metrics[i])))];
        if (!filterDim) return h('li', { class: 'row' }, inner);
        return h(
          'li',
          null,
          h(
            'button',
            {
              type: 'button',
              class: 'row',
              dataset: { dim: filterDim, value },
              title: `Filter: ${st.dimensionLabel(filterDim)} is ${label}`,
              onclick: () => addFilter(filterDim, value),
            },
            inner
          )
        );
      })
    )
  );
}

function panel(def) {
  const el = h('section', { class: 'panel card', id: `panel-${def.key}`, 'aria-labelledby': `h-${def.key}` });
  const current = def.tabs.find((t) => t.id === state[def.key]) || def.tabs[0];
  const tabs = h(
    'div',
    { class: 'tabs', role: 'tablist', 'aria-label': def.title },
    def.tabs.map((t) =>
      h(
        'button',
        {
          type: 'button',
          role: 'tab',
          id: `tab-${def.key}-${t.id}`,
          'aria-selected': String(t === current),
          tabindex: t === current ? 0 : -1,
          onclick: () => go({ [def.key]: t.id }, { replace: true }),
          onkeydown: (e) => {
            const i = def.tabs.indexOf(t);
            const next = e.key === 'ArrowRight' ? i + 1 : e.key === 'ArrowLeft' ? i - 1 : null;
            if (next == null) return;
            e.preventDefault();
            const to = def.tabs[(next + def.tabs.length) % def.tabs.length];
            go({ [def.key]: to.id }, { replace: true });
            document.getElementById(`tab-${def.key}-${to.id}`)?.focus();
          },
        },
        t.label
      )
    )
  );
  const body = h('div', { class: 'panel-body', role: 'tabpanel', 'aria-labelledby': `tab-${def.key}-${current.id}` });
  const expand = def.expandable && !current.render ? expandButton(current.id) : null;
  fill(el, h('div', { class: 'card-head' }, h('h2', { id: `h-${def.key}` }, def.title), tabs), body, expand);
  const load = (signal) => {
    loading(el);
    track(async (mine) => {
      try {
        const r = await api.query(
          base({ metrics: current.metrics, dimensions: current.dims, order_by: [[current.metrics[0], 'desc']], pagination: { limit: current.limit || ROWS }, compare: false }),
          signal
        );
        if (mine !== generation) return;
        if (current.render) await current.render(body, r.results);
        done(el);
        if (current.render) return;
        const two = current.dims.length === 2;
        fill(
          body,
          rows(r.results, { metrics: current.metrics, filterDim: current.dims[0], labelAt: two ? 1 : 0, valueAt: 0, labelOf: current.labelOf })
        );
      } catch (e) {
        if (e.name === 'AbortError' || mine !== generation) return;
        failed(body, e);
        done(el);
      }
    });
  };
  return { el, load };
}

function loadGoals(el, signal) {
  const head = h('div', { class: 'card-head' }, h('h2', { id: 'h-goals' }, 'Goal conversions'));
  if (!goals.length) {
    fill(el, head, h('p', { class: 'empty muted' }, 'No goals configured. Add ', h('code', null, '[[sites.goals]]'), ' entries (an event name or a page path) to the site in hush\u2019s config.'));
    return;
  }
  const body = h('div', { class: 'panel-body' });
  fill(el, head, body);
  loading(el);
  track(async (mine) => {
    const metrics = ['visitors', 'events', 'conversion_rate'];
    try {
      const r = await api.query(base({ metrics, dimensions: ['event:goal'], order_by: [['visitors', 'desc']], pagination: { limit: ROWS }, compare: false }), signal);
      if (mine !== generation) return;
      done(el);
      fill(body, rows(r.results, { metrics, filterDim: 'event:goal' }));
    } catch (e) {
      if (e.name === 'AbortError' || mine !== generation) return;
      failed(body, e);
      done(el);
    }
  });
}

function loadProps(el, signal) {
  const form = h(
    'form',
    { class: 'prop-form' },
    h('input', { name: 'prop', id: 'prop', value: state.prop || '', placeholder: 'property name', 'aria-label': 'Custom property name' }),
    h('button', { type: 'submit' }, 'Show')
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const prop = form.elements.prop.value.trim();
    go({ prop: prop || undefined }, { replace: true });
  });
  const body = h('div', { class: 'panel-body' });
  const keys = h('datalist', { id: 'prop-keys' });
  form.elements.prop.setAttribute('list', 'prop-keys');
  const offered = h('div', { class: 'prop-keys' });
  fill(el, h('div', { class: 'card-head' }, h('h2', { id: 'h-props' }, 'Custom properties'), form), keys, offered, body);
  loadPropKeys(keys, offered, signal);
  if (!state.prop) {
    fill(body, h('p', { class: 'empty muted' }, 'Name a custom property (sent with ', h('code', null, 'props'), ') to break visitors down by its values.'));
    return;
  }
  const dim = `event:props:${state.prop}`;
  loading(el);
  track(async (mine) => {
    const metrics = ['visitors', 'events'];
    try {
      const r = await api.query(base({ metrics, dimensions: [dim], order_by: [['visitors', 'desc']], pagination: { limit: ROWS }, compare: false }), signal);
      if (mine !== generation) return;
      done(el);
      fill(body, rows(r.results, { metrics, filterDim: dim }));
    } catch (e) {
      if (e.name === 'AbortError' || mine !== generation) return;
      failed(body, e);
      done(el);
    }
  });
}

/** hush's own panels (panels-extra.js): what was not counted, what is collected. */
function hushPanels(signal) {
  const ctx = { site, dateRange: st.dateRange(state, info.timezone), signal, track };
  return h('div', { class: 'grid' }, extra.notCounted(ctx), extra.whatWeCollect(ctx));
}

// ---------------------------------------------------------------------------
// The world map, the expanded Pages view, the property keys.

/** The Locations panel's map tab: countries shaded by visitors; a click filters. */
function renderMap(body, results) {
  const list = results.map((r) => ({ code: r.dimensions[0], name: r.dimensions[1], visitors: r.metrics[0] || 0 }));
  return drawMap(body, list, (code) => addFilter('visit:country', code)).catch(() =>
    fill(body, h('p', { class: 'error', role: 'alert' }, 'The map could not be loaded.'))
  );
}

/** The Pages panel's way to its expanded view. */
function expandButton(id) {
  return h('p', { class: 'more' }, h('button', { type: 'button', class: 'link', id: 'expand-pages', onclick: () => go({ expand: id, sort: undefined, pageno: undefined }) }, 'Details: all pages, rates, time and scroll'));
}

/** The expanded Pages view instead of the panels (render() has begun the load). */
function renderDetails(focused) {
  const card = h('section', { class: 'card', id: 'details', 'aria-labelledby': 'h-details' });
  fill(root, header(), filterBar(), h('main', { id: 'main' }, card));
  if (focused) document.getElementById(focused)?.focus();
  const signal = controller.signal;
  loadCurrent(signal);
  loading(card);
  track(async (mine) => {
    const query = async (extra) => {
      const filters = st.apiFilters(state).concat(extra.filters || []);
      const r = await api.query(base({ ...extra, filters, compare: false }), signal);
      return mine === generation ? r : null;
    };
    try {
      await loadDetails(card, { state, query, go, addFilter, label: st.dimensionLabel });
      if (mine === generation) done(card);
    } catch (e) {
      if (e.name === 'AbortError' || mine !== generation) return;
      failed(card, e, 'Pages');
    }
  });
}

/** The property keys seen in the period, for the properties panel to offer. */
async function propKeys(signal) {
  try {
    const r = await api.props(site, st.dateRange(state, info.timezone), signal);
    return r.props || [];
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    return null;
  }
}

/** Fills the property input's suggestions and the row of keys to pick from. */
function loadPropKeys(list, offered, signal) {
  track(async (mine) => {
    let found;
    try {
      found = await propKeys(signal);
    } catch {
      return;
    }
    if (mine !== generation || !found) return;
    fill(list, found.map((p) => h('option', { value: p.key })));
    if (!found.length) return;
    fill(
      offered,
      h('span', { class: 'muted' }, 'Seen: '),
      found.slice(0, 12).map((p) =>
        h(
          'button',
          {
            type: 'button',
            class: 'key',
            'aria-pressed': String(p.key === state.prop),
            title: `${p.events} events`,
            dataset: { key: p.key },
            onclick: () => go({ prop: p.key }, { replace: true }),
          },
          p.key
        )
      )
    );
  });
}

// ---------------------------------------------------------------------------
// The site list.

async function sitesPage() {
  document.title = 'Sites · hush';
  setBusy(1);
  const list = h('ul', { class: 'sites', 'aria-busy': 'true' }, h('li', { class: 'muted' }, 'Loading…'));
  fill(root, h('header', { class: 'bar' }, h('div', { class: 'title' }, h('span', { class: 'home' }, 'hush'), h('h1', null, 'Sites'))), h('main', null, h('section', { class: 'card' }, list)));
  try {
    const r = await api.sites();
    list.removeAttribute('aria-busy');
    if (!r.sites.length) {
      fill(list, h('li', { class: 'muted' }, 'No site you may read. Sites with public = true in hush\u2019s config are listed here.'));
    } else {
      fill(
        list,
        r.sites.map((s) => h('li', null, h('a', { href: `/${encodeURIComponent(s.domain)}` }, s.domain), h('span', { class: 'muted' }, s.timezone)))
      );
    }
  } catch (e) {
    fill(list, h('li', { class: 'error', role: 'alert' }, `The site list could not be loaded: ${e.message}`));
  } finally {
    setBusy(-1);
  }
}

async function start() {
  if (!site) return sitesPage();
  setBusy(1);
  try {
    const [list, g] = await Promise.all([api.sites().catch(() => null), api.goals(site).catch(() => null)]);
    const mine = list?.sites?.find((s) => s.domain === site);
    if (mine) info = mine;
    goals = g?.goals || [];
  } finally {
    setBusy(-1);
  }
  render();
}

start();
