// hush's tracker: every feature in one file, each switched by a data- attribute on
// its own <script> tag (tracker/README.md lists them). It sends exactly the body
// hush's Events API parses (Plausible's), as text/plain with sendBeacon, so there is
// no CORS preflight and no answer to wait for, and a hit survives the page being
// left. It writes nothing: no cookie, no storage; it only reads the two opt-out
// flags in localStorage. Written for the minifier (tracker/build) and for gzip:
// the budget is 1,024 bytes gzipped for all of it, checked by a Rust test.
// ES2020 (browsers from 2020 on).
((w, d) => {
  let loc = w.location;
  let script = d.currentScript;
  let ds = script.dataset;
  let api = ds.api || new URL('/api/event', script.src);
  let hashMode = 'hash' in ds && 1;
  let now = Date.now;
  // The page's identity: its path, and in hash mode its #fragment.
  let key = () => loc.pathname + (hashMode ? loc.hash : '');

  // Ignored unless data-local: host names without a dot (localhost, [::1], file:
  // pages, which have none), 127.x.x.x, automated browsers. Always ignored: a
  // browser whose owner set plausible_ignore or hush_ignore to "true" in
  // localStorage (reading it throws where storage is blocked: no opt-out then).
  let off;
  try {
    off =
      (!('local' in ds) && (/^(127\.|[^.]*$)/.test(loc.hostname) || navigator.webdriver)) ||
      (localStorage.plausible_ignore || localStorage.hush_ignore) == 'true';
  } catch {}

  // data-include / data-exclude: comma lists of path patterns where `*` (or `**`)
  // matches any characters, `/` included; a trailing slash is optional.
  let matches = (list) => list?.match(/[^\s,]+/g).some((p) => RegExp('^' + p.replace(/\*+/g, '.*') + '/?$').test(key()));

  // Downloads: links to these extensions, or to data-file-types (a comma list).
  let files = RegExp(
    `\\.(${ds.fileTypes?.replace(/\W+/g, '|') || 'pdf|docx?|xlsx?|pptx?|csv|zip|gz|dmg|exe'})$`,
    'i'
  );

  // JSON leaves out what is undefined, and functions (a callback).
  let post = (n, u, body) =>
    navigator.sendBeacon(api, JSON.stringify({ ...body, n, u, d: ds.domain, r: d.referrer, h: hashMode }));

  // Engagement of the current page view: its URL (none before the first), the
  // deepest scroll position seen (px) and when the running visible stretch began
  // (0 while hidden).
  let page, depth, since;
  // NaN before the first page view, which resets it.
  let scrolled = () => (depth = Math.max(depth, scrollY));
  // Sent at the end of each visible stretch of a page view: when the page is
  // hidden or left, and before a single-page app's next page view. So the
  // engagement rows of a page view add up to its active time. Also starts
  // (visible) or stops (hidden) the next stretch.
  let engage = () => {
    if (page && since)
      // Scroll depth: how much of the page was seen, in percent.
      post('engagement', page, {
        e: now() - since,
        // (min first: a page with an empty body is 100%, not Infinity | 0 = 0)
        sd: Math.min(100, ((depth + innerHeight) / d.body.scrollHeight) * 100) | 0,
      });
    since = !d.hidden && now();
  };

  // window.plausible(name, {props, revenue, interactive, u, callback}).
  let send = (n, o = {}, u = o.u || loc.href) => {
    if (!off && !(ds.include && !matches(ds.include)) && !matches(ds.exclude)) {
      if (n == 'pageview') {
        engage();
        page = u;
        depth = 0;
      }
      // props, revenue and interactive go under their long names.
      post(n, u, o);
    }
    o.callback?.();
  };

  d.addEventListener('visibilitychange', engage);
  w.addEventListener('scroll', scrolled);

  // Tagged elements: class="hush-event-name=Signup hush-event-plan=pro" (or
  // plausible-event-*); `+` stands for a space. True when sent.
  let tagged = (el, props = {}) => (
    (el?.classList + '').replace(/-event-(\S+?)=(\S+)/g, (m, k, v) => (props[k] = v.replace(/\+/g, ' '))),
    props.name && !send(props.name, { props: { ...props, name: undefined } })
  );

  // Clicks (left, and middle through auxclick) on tagged elements (a tagged form
  // counts when submitted), downloads and links to other hosts.
  // The link's URL is sent without its query and fragment (they may carry tokens).
  let click = (ev, t = ev.target, link = t.closest('a'), file) => {
    if (
      ev.button < 2 &&
      !tagged(t.closest('[class*=-event-]:not(form)')) &&
      ((file = files.test(link?.pathname)) || (link?.host && link.host != loc.host))
    )
      send(file ? 'File Download' : 'Outbound Link: Click', { props: { url: link.origin + link.pathname } });
  };
  d.addEventListener('click', click);
  d.addEventListener('auxclick', click);
  d.addEventListener('submit', (ev) => tagged(ev.target));

  // Page views on load and on every path change of a single-page app (with
  // data-hash, a change of the #fragment too), unless data-manual.
  let last;
  let view = () => {
    if (last != (last = key())) {
      send('pageview');
    }
  };
  if (!('manual' in ds)) {
    let h = history;
    for (let k of ['pushState', 'replaceState']) {
      let f = h[k];
      h[k] = (...args) => {
        f.apply(h, args);
        view();
      };
    }
    // Back and forward; a change of the #fragment (a link, or setting
    // location.hash) fires only hashchange.
    w.addEventListener('popstate', view);
    w.addEventListener('hashchange', view);
    view();
  }
  // The row's pathname says which page was missing.
  if (404 in ds) send('404');

  // Calls made before the script loaded, queued by the usual snippet:
  // window.plausible = window.plausible || function () {
  //   (window.plausible.q = window.plausible.q || []).push(arguments) }
  w.plausible?.q?.map((args) => send(...args));
  w.plausible = send;
})(window, document);
