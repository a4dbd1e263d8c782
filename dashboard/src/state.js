// The dashboard's whole state lives in the query string, so every view can be
// bookmarked and shared: period (+ from/to), comparison, graph metric and interval,
// filters (f=op,dimension,value, repeatable), each panel's tab, the property
// key, and the expanded Pages view (expand, sort, pageno). This module reads and writes it, and turns it into Stats API date ranges.

export const PERIODS = [
  ['realtime', 'Realtime'],
  ['day', 'Today'],
  ['yesterday', 'Yesterday'],
  ['7d', 'Last 7 days'],
  ['30d', 'Last 30 days'],
  ['month', 'Month to date'],
  ['lastmonth', 'Last month'],
  ['12mo', 'Last 12 months'],
  ['year', 'Year to date'],
  ['all', 'All time'],
  ['custom', 'Custom range'],
];

export const COMPARISONS = [
  ['', 'No comparison'],
  ['previous_period', 'Previous period'],
  ['year_over_year', 'Year over year'],
];

export const OPERATORS = [
  ['is', 'is'],
  ['is_not', 'is not'],
  ['contains', 'contains'],
];

/** Dimensions a filter may name, with their labels. */
export const DIMENSIONS = {
  'visit:channel': 'Channel',
  'visit:source': 'Source',
  'visit:referrer': 'Referrer',
  'visit:utm_medium': 'UTM medium',
  'visit:utm_source': 'UTM source',
  'visit:utm_campaign': 'UTM campaign',
  'visit:utm_term': 'UTM term',
  'visit:utm_content': 'UTM content',
  'event:page': 'Page',
  'visit:entry_page': 'Entry page',
  'visit:exit_page': 'Exit page',
  'event:hostname': 'Hostname',
  'visit:country': 'Country',
  'visit:region': 'Region',
  'visit:city': 'City',
  'visit:browser': 'Browser',
  'visit:browser_version': 'Browser version',
  'visit:os': 'Operating system',
  'visit:os_version': 'OS version',
  'visit:device': 'Device',
  'event:goal': 'Goal',
};

export function dimensionLabel(dim) {
  if (dim.startsWith('event:props:')) return `Property ${dim.slice(12)}`;
  return DIMENSIONS[dim] || dim;
}

/** Intervals each period may be drawn in; the first is the default. */
const INTERVALS = {
  realtime: ['minute'],
  day: ['hour', 'minute'],
  yesterday: ['hour', 'minute'],
  '7d': ['day', 'hour'],
  '30d': ['day', 'week'],
  month: ['day', 'week'],
  lastmonth: ['day', 'week'],
  '12mo': ['month', 'week', 'day'],
  year: ['month', 'week', 'day'],
  all: ['month', 'week'],
};

const DEFAULTS = {
  period: '30d',
  compare: '',
  metric: 'visitors',
  sources: 'channels',
  pages: 'top',
  locations: 'countries',
  devices: 'browser',
};

export const GRAPH_METRICS = ['visitors', 'visits', 'pageviews', 'views_per_visit', 'bounce_rate', 'visit_duration'];
const DATE = /^\d{4}-\d{2}-\d{2}$/;

/** The state in `search` (location.search), defaults filled in. */
export function readState(search) {
  const q = new URLSearchParams(search);
  const s = { ...DEFAULTS, filters: [] };
  const pick = (key, ok) => {
    const v = q.get(key);
    if (v != null && ok(v)) s[key] = v;
  };
  pick('period', (v) => PERIODS.some(([p]) => p === v));
  pick('compare', (v) => COMPARISONS.some(([c]) => c === v));
  pick('metric', (v) => GRAPH_METRICS.includes(v));
  for (const key of ['sources', 'pages', 'locations', 'devices']) pick(key, (v) => /^[a-z_]+$/.test(v));
  pick('interval', (v) => ['minute', 'hour', 'day', 'week', 'month'].includes(v));
  pick('prop', (v) => v.length > 0 && v.length <= 300);
  // The expanded Pages view, its sort and page.
  pick('expand', (v) => ['top', 'entry', 'exit'].includes(v));
  pick('sort', (v) => /^[a-z_]+:(asc|desc)$/.test(v));
  pick('pageno', (v) => /^[1-9]\d{0,5}$/.test(v));
  pick('from', (v) => DATE.test(v));
  pick('to', (v) => DATE.test(v));
  if (s.period === 'custom' && !(s.from && s.to && s.from <= s.to)) s.period = DEFAULTS.period;
  for (const f of q.getAll('f')) {
    const first = f.indexOf(',');
    const second = f.indexOf(',', first + 1);
    if (first < 0 || second < 0) continue;
    const op = f.slice(0, first);
    const dim = f.slice(first + 1, second);
    const value = f.slice(second + 1);
    if (!OPERATORS.some(([o]) => o === op) || !(dim in DIMENSIONS || dim.startsWith('event:props:'))) continue;
    s.filters.push({ op, dim, value });
  }
  return s;
}

// Query-string escaping that leaves `,`, `:` and `/` readable.
const enc = (v) => encodeURIComponent(v).replace(/%2C/g, ',').replace(/%3A/g, ':').replace(/%2F/g, '/');

/** The query string of `s` (without defaults), starting with `?`, or ''. */
export function writeState(s) {
  const parts = [];
  const put = (k, v) => parts.push(`${k}=${enc(v)}`);
  for (const key of ['period', 'compare', 'metric', 'sources', 'pages', 'locations', 'devices']) {
    if (s[key] !== DEFAULTS[key]) put(key, s[key]);
  }
  if (s.period === 'custom') {
    put('from', s.from);
    put('to', s.to);
  }
  if (s.interval) put('interval', s.interval);
  if (s.prop) put('prop', s.prop);
  for (const key of ['expand', 'sort', 'pageno']) if (s[key]) put(key, s[key]);
  for (const f of s.filters) put('f', `${f.op},${f.dim},${f.value}`);
  return parts.length ? `?${parts.join('&')}` : '';
}

export function intervals(period) {
  return INTERVALS[period] || ['day', 'week', 'month'];
}

/** The interval to draw `s` in: the chosen one when the period allows it. */
export function interval(s) {
  const allowed = intervals(s.period);
  if (s.period === 'custom' && !s.interval) {
    const days = daysBetween(s.from, s.to);
    return days <= 2 ? 'hour' : days <= 62 ? 'day' : days <= 400 ? 'week' : 'month';
  }
  return allowed.includes(s.interval) ? s.interval : allowed[0];
}

// ---------------------------------------------------------------------------
// Dates in the site's time zone.

/** Parts of `date` in `tz`: { y, m, d, H, M } as strings. */
function parts(date, tz) {
  const out = {};
  const f = new Intl.DateTimeFormat('en-CA', {
    timeZone: tz,
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
    hourCycle: 'h23',
  });
  for (const p of f.formatToParts(date)) out[p.type] = p.value;
  return { y: out.year, m: out.month, d: out.day, H: out.hour, M: out.minute };
}

/** Today in `tz` as YYYY-MM-DD. */
export function today(tz, now = new Date()) {
  const p = parts(now, tz);
  return `${p.y}-${p.m}-${p.d}`;
}

/** YYYY-MM-DD plus `n` days. */
export function addDays(day, n) {
  const [y, m, d] = day.split('-').map(Number);
  return new Date(Date.UTC(y, m - 1, d + n)).toISOString().slice(0, 10);
}

function daysBetween(a, b) {
  return Math.round((Date.parse(b) - Date.parse(a)) / 86400000);
}

/** The label of the time bucket `now` falls in, as the API writes labels. */
export function nowLabel(tz, iv, now = new Date()) {
  const p = parts(now, tz);
  const day = `${p.y}-${p.m}-${p.d}`;
  switch (iv) {
    case 'minute':
      return `${day} ${p.H}:${p.M}:00`;
    case 'hour':
      return `${day} ${p.H}:00:00`;
    case 'month':
      return `${p.y}-${p.m}-01`;
    default:
      return day;
  }
}

/** The Stats API `date_range` of the state's period. */
export function dateRange(s, tz, now = new Date()) {
  const t = today(tz, now);
  switch (s.period) {
    case 'realtime':
      return [new Date(now.getTime() - 30 * 60000).toISOString(), now.toISOString()];
    case 'yesterday': {
      const y = addDays(t, -1);
      return [y, y];
    }
    case 'lastmonth': {
      const first = `${t.slice(0, 7)}-01`;
      const last = addDays(first, -1);
      return [`${last.slice(0, 7)}-01`, last];
    }
    case 'custom':
      return [s.from, s.to];
    default:
      return s.period;
  }
}

/** The `date_range` of "current visitors": the last five minutes. */
export function lastFiveMinutes(now = new Date()) {
  return [new Date(now.getTime() - 5 * 60000).toISOString(), now.toISOString()];
}

/** Whether the period reaches today (so its last bucket is still filling). */
export function reachesToday(s, tz) {
  if (s.period === 'yesterday' || s.period === 'lastmonth') return false;
  if (s.period === 'custom') return s.to >= today(tz);
  return true;
}

/** The Stats API `filters` of the state. */
export function apiFilters(s) {
  return s.filters.map((f) => [f.op, f.dim, [f.value]]);
}
