-- Synthetic traffic for benches/query/run --synthetic ROWS: ROWS events of one site
-- (demo.example) over 30 days from 2024-11-01 UTC, five rows per visit (page views,
-- one engagement, a Signup on every third visit), two visits per visitor, a fixed mix
-- of sources, browsers, devices and countries. Generated inside the engine, so 100M
-- rows take minutes where hush demo would take hours. Columns in the order of events.
INSERT INTO bench.events
SELECT
  'demo.example' AS site,
  toDateTime(toUInt32(1730419200 + (cityHash64(s) % (30*86400)) + (n % 5) * 47)) AS timestamp,
  multiIf(n % 5 = 3, 'engagement', n % 5 = 4 AND s % 3 = 0, 'Signup', 'pageview') AS name,
  cityHash64(intDiv(s, 2)) AS visitor_id,
  s + 1 AS session_id,
  concat('/page/', toString(cityHash64(s * 5) % 200)) AS entry_page,
  'demo.example' AS hostname,
  if(n % 5 = 0, concat('/page/', toString(cityHash64(s * 5) % 200)), concat('/page/', toString(cityHash64(n) % 200))) AS pathname,
  if(n % 5 = 0, ['', 'www.google.com', 'www.bing.com', 't.co', ''][s % 5 + 1], '') AS referrer_host,
  '' AS referrer_path,
  if(n % 5 = 0, ['', 'Google', 'Bing', 'Twitter', 'news'][s % 5 + 1], '') AS source,
  if(n % 5 = 0, ['direct', 'search', 'search', 'social', 'email'][s % 5 + 1], 'direct') AS channel,
  '' , '', if(n % 5 = 0 AND s % 7 = 0, 'spring', ''), '', '',
  ['Chrome', 'Safari', 'Firefox', 'Edge'][visitor_id % 4 + 1] AS browser,
  '120.0', ['Windows', 'macOS', 'iOS', 'Android'][visitor_id % 4 + 1], '10',
  ['desktop', 'desktop', 'mobile', 'tablet'][visitor_id % 4 + 1],
  ['DE', 'US', 'FR', 'GB', 'EE'][visitor_id % 5 + 1] AS country, '', 0, '',
  if(name = 'Signup', map('plan', 'pro'), map()) AS props,
  CAST(NULL AS Nullable(Int64)), '',
  1, if(name = 'engagement', toUInt32(cityHash64(n) % 60000), 0), if(name = 'engagement', toUInt8(cityHash64(n) % 101), 255)
FROM (SELECT number AS n, intDiv(number, 5) AS s FROM numbers({rows:UInt64}))
