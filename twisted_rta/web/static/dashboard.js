// twisted-rta dashboard: live figures over Server-Sent Events (polling the JSON API when the
// stream fails), the chart of any counter and the breakdowns from the query API, and the web
// analytics of one site (or all) with the tracker's snippet. The chosen chart metric,
// breakdown and site live in the URL hash (#metric=...&breakdown=...&by=...&site=...), so a
// link or a reload shows the same. No dependencies.
(() => {
  "use strict";

  const KEY_NAME = "rta.apiKey";
  const POLL_MS = 5000;
  const STALE_MS = 8000; // no stream message for this long: poll until the stream is back
  const SSE_RETRY_MS = 30000;
  const SLOW_POLL_EVERY = 6; // polls between refreshes of the day/hour uniques
  const RANGES = {
    "15m": { from: "-15m", resolution: "1m", label: "last 15 min", refresh: 10000 },
    "1h": { from: "-1h", resolution: "1m", label: "last hour", refresh: 15000 },
    "24h": { from: "-24h", resolution: "1h", label: "last 24 h", refresh: 60000 },
    "7d": { from: "-7d", resolution: "1h", label: "last 7 days", refresh: 300000 },
    "30d": { from: "-30d", resolution: "1d", label: "last 30 days", refresh: 300000 },
  };
  const UNITS = { 60: "minute", 3600: "hour", 86400: "day" };
  const BREAKDOWNS = ["page_views", "clicks", "events_by_type"];
  const DEFAULT_METRIC = "total_events";
  // events_by_type merged is total_events (every event feeds it): it is broken down, and
  // total_events is what the chart offers for it.
  const NOT_CHARTED = new Set(["events_by_type"]);
  const LIST_PAGE = 2000; // metrics per page of /api/v1/metrics
  const LIST_MAX_PAGES = 100; // a bound on one reading of the list
  const LIST_GAP_MS = 10000; // at least this long between two readings, per page read
  const LIST_GAP_MAX_MS = 300000;
  const BREAKDOWN_LIMIT = 10;
  const OTHER_KEY = "__other__"; // the overflow series of a family
  const MAX_LABELS = 3;
  const LABEL_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
  const KINDS = { counter: "", set: "uniques", histogram: "histogram", gauge: "gauge" };
  // Web analytics. The stream says, every period, each site's visitors and pageviews of the
  // last 5 minutes: "visitors now" comes from it, and a change there is what makes the page
  // fetch its site's figures and lists for the range again (at most every WEB_GAP_MS), so
  // an idle site costs no query and a busy one a few per page every few seconds.
  const WEB_GAP_MS = 5000;
  const WEB_LIST_LIMIT = 10;
  const SITES_FROM = "-7d"; // the picker lists the sites with visitors this recently
  const SITES_LIMIT = 50; // as many as the stream names
  const SITES_GAP_MS = 10000; // at least this long between two readings of the site list
  const SITES_REFRESH_MS = 300000; // and at most this long
  const ALL_SITES = ""; // the picker's value (and the hash's site=) for every site together
  const PLACEHOLDER_SITE = "example.com"; // the snippet's site when there is none yet

  const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
  const money = new Intl.NumberFormat(undefined, {
    minimumFractionDigits: 2, maximumFractionDigits: 2,
  });
  const percent = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 0 });

  const $ = (id) => document.getElementById(id);
  let range = "1h";
  let source = null;
  let lastMessage = 0;
  let pollTimer = null;
  let polls = 0;
  let slowFigures = {};
  let lastPollTotal = null;
  let refreshTimer = null;
  let watchdog = null;
  let sseRetry = null;
  // What the metric list says: counters to chart, and families (base -> {kind, labels}) to
  // break down. `labels` is the label names of a family with several, else null.
  let catalog = { counters: [DEFAULT_METRIC], families: new Map(), loaded: false };
  let catalogTimer = null;
  let catalogBusy = false;
  let catalogAgain = false;
  let catalogAt = 0;
  let catalogGap = LIST_GAP_MS;
  let catalogTotal; // total_events as last seen when the list was read
  let lastTotal;
  // The choices (from the hash); null: the first family, its first label.
  let chartMetric = DEFAULT_METRIC;
  let chosenFamily = null;
  let chosenBy = null;
  let seriesRequest = 0;
  let breakdownRequest = 0;
  // Web analytics: enabled is null until the site list answers (false: the daemon has no
  // per-site visitors); sites are the picker's, most visitors first.
  const web = { enabled: null, sites: [] };
  let chosenSite = null; // from the hash: null = the site with most visitors
  let webTimer = null;
  let webAt = 0;
  let webSignal; // what the stream last said of the shown site
  let webRequest = 0;
  const listRequests = new Map(); // list id -> the number of its latest request
  let sitesTimer = null;
  let sitesAt = 0;

  class AuthError extends Error {}

  function apiKey() {
    try { return sessionStorage.getItem(KEY_NAME); } catch { return null; }
  }

  async function api(path) {
    const headers = { Accept: "application/json" };
    const key = apiKey();
    if (key) headers.Authorization = "Bearer " + key;
    const response = await fetch(path, { headers, cache: "no-store" });
    const body = await response.json().catch(() => null);
    if (response.status === 401 || response.status === 403) {
      throw new AuthError((body && body.message) || "the API key was refused");
    }
    return { status: response.status, body };
  }

  // -- rendering ------------------------------------------------------------------------

  function show(field, text) {
    for (const node of document.querySelectorAll(`[data-field="${field}"]`)) {
      node.textContent = text;
    }
  }

  const dash = (value, format) => (value === null || value === undefined ? "–" : format(value));
  const count = (value) => dash(value, (v) => integer.format(v));
  const rate = (value) => dash(value, (v) => decimal.format(v));
  const amount = (value) => dash(value, (v) => money.format(v));
  const figure = (value) => (Number.isInteger(value) ? integer : decimal).format(value);

  function ago(seconds) {
    if (seconds < 90) return `${Math.max(0, Math.round(seconds))} s ago`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
    return `${Math.round(seconds / 3600)} h ago`;
  }

  function duration(seconds) {
    if (seconds < 120) return `${Math.round(seconds)} s`;
    if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
    if (seconds < 172800) return `${Math.round(seconds / 3600)} h`;
    return `${Math.round(seconds / 86400)} d`;
  }

  function render(update) {
    for (const name of ["total_events", "pageviews", "clicks", "purchases", "unique_users",
      "unique_sessions", "active_users_5m", "unique_users_today", "unique_users_hour",
      "unique_sessions_today", "unique_sessions_hour"]) {
      show(name, count(update[name]));
    }
    show("events_per_second", rate(update.events_per_second));
    show("events_per_second_5m", rate(update.events_per_second_5m));
    show("revenue", amount(update.revenue));
    show("revenue_total", amount(update.revenue));
    const histogram = update.revenue_histogram || {};
    show("orders", count(histogram.count));
    for (const q of ["p50", "p95", "p99"]) show(q, amount(histogram[q]));
    renderHealth(update.health || {}, update.time);
    renderWebNow(update.web_now);
    $("updated").textContent = new Date(update.time || Date.now()).toLocaleTimeString();
    // New events may have made new metrics: read the list again (not too often).
    lastTotal = update.total_events;
    if (lastTotal !== catalogTotal) requestCatalog();
  }

  function renderHealth(health, time) {
    const ready = $("ready");
    if (health.ready === undefined) {
      ready.dataset.state = "unknown";
      ready.textContent = "unknown";
    } else {
      ready.dataset.state = health.ready ? "ready" : "not-ready";
      ready.textContent = health.ready ? "ready" : "not ready";
    }
    $("failing").textContent = health.failing && health.failing.length
      ? "failing: " + health.failing.join(", ") : "";
    show("queue_depth", count(health.queue_depth));
    show("queue_capacity", count(health.queue_capacity));
    const share = health.queue_capacity ? health.queue_depth / health.queue_capacity : 0;
    $("queue-meter").style.width = `${Math.min(100, share * 100)}%`;
    show("pending_windows", count(health.pending_windows));
    show("node_id", health.node_id || "–");
    show("uptime", dash(health.uptime_seconds, duration));
    // Both times come from the server: the browser's clock may be off.
    const now = time ? Date.parse(time) : Date.now();
    let flushed = "–"; // polling cannot tell: /ready only describes it in words
    if (health.last_flush) flushed = ago((now - Date.parse(health.last_flush)) / 1000);
    else if (health.last_flush === null) flushed = "not yet";
    show("last_flush", flushed);
  }

  function setConnection(state, text) {
    const pill = $("connection");
    pill.dataset.state = state;
    pill.textContent = text;
  }

  // -- live figures: the stream, and polling when it fails ------------------------------

  function connectStream() {
    if (source) source.close();
    if (sseRetry) clearTimeout(sseRetry);
    sseRetry = null;
    if (typeof EventSource === "undefined") {
      startPolling();
      return;
    }
    const key = apiKey();
    // EventSource cannot send headers: the key goes in the query string (this route only).
    const url = "/api/v1/stream" + (key ? "?api_key=" + encodeURIComponent(key) : "");
    source = new EventSource(url);
    source.onmessage = (event) => {
      lastMessage = Date.now();
      stopPolling();
      setConnection("live", "live");
      render(JSON.parse(event.data));
    };
    source.onerror = () => {
      if (source && source.readyState === EventSource.CLOSED) {
        // Refused (e.g. 401) or not an event stream: the browser will not retry by itself.
        source = null;
        startPolling();
        sseRetry = setTimeout(connectStream, SSE_RETRY_MS);
      }
    };
  }

  function startPolling() {
    if (pollTimer) return;
    setConnection("polling", "polling");
    pollOnce();
    pollTimer = setInterval(pollOnce, POLL_MS);
  }

  function stopPolling() {
    if (!pollTimer) return;
    clearInterval(pollTimer);
    pollTimer = null;
    lastPollTotal = null;
  }

  async function metricValue(name, query = "") {
    const { status, body } = await api(`/api/v1/metrics/${encodeURIComponent(name)}${query}`);
    if (status === 404) return { value: 0, count: 0 };
    if (status !== 200) throw new Error(`${name}: ${status}`);
    return body.data;
  }

  async function pollOnce() {
    try {
      const slow = polls++ % SLOW_POLL_EVERY === 0;
      const [stats, ready, pageviews, clicks, purchases, revenue, histogram, recent, active] =
        await Promise.all([
          api("/api/v1/stats"), api("/ready"), metricValue("pageviews"),
          metricValue("clicks"), metricValue("purchases"), metricValue("revenue"),
          metricValue("revenue_histogram"), metricValue("total_events", "?from=-5m"),
          metricValue("unique_users", "?from=-5m"),
        ]);
      if (slow) {
        const midnight = new Date();
        midnight.setUTCHours(0, 0, 0, 0);
        const today = "?from=" + encodeURIComponent(midnight.toISOString());
        const [usersToday, usersHour, sessionsToday, sessionsHour] = await Promise.all([
          metricValue("unique_users", today), metricValue("unique_users", "?from=-1h"),
          metricValue("unique_sessions", today), metricValue("unique_sessions", "?from=-1h"),
        ]);
        slowFigures = {
          unique_users_today: usersToday.value, unique_users_hour: usersHour.value,
          unique_sessions_today: sessionsToday.value, unique_sessions_hour: sessionsHour.value,
        };
      }
      const webNow = await pollWebNow();
      const data = stats.body.data;
      const now = Date.now();
      let perSecond = null;
      if (lastPollTotal) {
        perSecond = (data.total_events - lastPollTotal.total) / ((now - lastPollTotal.at) / 1000);
      }
      lastPollTotal = { total: data.total_events, at: now };
      const span = recent.range ? (now - Date.parse(recent.range.from)) / 1000 : 300;
      const checks = (ready.body && ready.body.checks) || {};
      render({
        time: new Date(now).toISOString(),
        total_events: data.total_events, unique_users: data.unique_users,
        unique_sessions: data.unique_sessions, pageviews: pageviews.value,
        clicks: clicks.value, purchases: purchases.value, revenue: revenue.value,
        revenue_histogram: histogram,
        events_per_second: perSecond === null ? null : Math.max(0, perSecond),
        events_per_second_5m: recent.value / Math.max(span, 1),
        active_users_5m: active.value,
        ...slowFigures,
        web_now: webNow,
        health: {
          ready: ready.status === 200,
          failing: Object.keys(checks).filter((name) => checks[name].status !== "ok"),
          queue_depth: data.queue_depth, queue_capacity: data.queue_capacity,
          pending_windows: data.pending_windows, node_id: data.node_id,
          uptime_seconds: data.uptime_seconds,
        },
      });
      if (pollTimer) setConnection("polling", "polling");
    } catch (error) {
      if (error instanceof AuthError) {
        needKey(error.message);
        return;
      }
      setConnection("offline", "offline");
    }
  }

  // -- chart and breakdowns -------------------------------------------------------------

  const SVG = "http://www.w3.org/2000/svg";

  function drawChart(data, metric) {
    const svg = $("chart");
    const what = metric === DEFAULT_METRIC ? "events" : metric;
    svg.replaceChildren();
    const step = data.resolution_seconds * 1000;
    const values = new Map(data.points.map((p) => [Date.parse(p.start), p.metric.value]));
    let first = Date.parse(data.from);
    let last = Date.parse(data.to) - step;
    for (const start of values.keys()) {
      first = Math.min(first, start);
      last = Math.max(last, start);
    }
    const slots = [];
    for (let t = first; t <= last; t += step) slots.push([t, values.get(t) || 0]);
    const max = Math.max(1, ...slots.map(([, v]) => v));
    const width = 600;
    const height = 200;
    const slot = width / Math.max(slots.length, 1);
    for (const fraction of [0.25, 0.5, 0.75]) {
      const line = document.createElementNS(SVG, "line");
      line.setAttribute("class", "grid");
      line.setAttribute("x1", "0");
      line.setAttribute("x2", String(width));
      line.setAttribute("y1", String(height * fraction));
      line.setAttribute("y2", String(height * fraction));
      svg.appendChild(line);
    }
    slots.forEach(([t, v], i) => {
      const bar = document.createElementNS(SVG, "rect");
      const h = (v / max) * (height - 4);
      bar.setAttribute("class", "bar");
      bar.setAttribute("x", String(i * slot + slot * 0.1));
      bar.setAttribute("width", String(Math.max(slot * 0.8, 0.5)));
      bar.setAttribute("y", String(height - h));
      bar.setAttribute("height", String(h));
      bar.dataset.value = String(v);
      const title = document.createElementNS(SVG, "title");
      title.textContent = `${new Date(t).toLocaleString()}: ${figure(v)} ${what}`;
      bar.appendChild(title);
      svg.appendChild(bar);
    });
    const short = step < 86400000
      ? (t) => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
      : (t) => new Date(t).toLocaleDateString();
    $("axis-from").textContent = slots.length ? short(slots[0][0]) : "";
    $("axis-to").textContent = slots.length ? short(slots[slots.length - 1][0]) : "";
    $("axis-max").textContent = `max ${figure(max)}`;
    $("chart-unit").textContent = UNITS[data.resolution_seconds] || `${data.resolution_seconds} s`;
    $("chart-title").textContent = metric === DEFAULT_METRIC ? "Events" : metric;
    svg.dataset.metric = metric;
    svg.setAttribute("aria-label", `${what} per ${$("chart-unit").textContent}, max ${max}`);
  }

  async function loadSeries() {
    const chosen = RANGES[range];
    const metric = chartMetric;
    const request = ++seriesRequest;
    const base = `/api/v1/metrics/${encodeURIComponent(metric)}/series?from=${chosen.from}`;
    let reply = await api(`${base}&resolution=${chosen.resolution}`);
    if (reply.status === 400) reply = await api(base); // resolutions configured differently
    // Only the latest request draws: an answer for a metric or range since left is dropped.
    if (reply.status === 200 && request === seriesRequest) drawChart(reply.body.data, metric);
  }

  function drawMessage(base, text, error = false) {
    const list = $(`bars-${base}`);
    const item = document.createElement("li");
    item.className = error ? "empty error" : "empty";
    item.textContent = text;
    list.replaceChildren(item);
  }

  function drawBars(base, data, emptyText = "no data in this range") {
    const list = $(`bars-${base}`);
    list.replaceChildren();
    if (!data.items.length) {
      drawMessage(base, emptyText);
      return;
    }
    const max = Math.max(...data.items.map((item) => item.count), 1);
    for (const item of data.items) {
      const row = document.createElement("li");
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = `${(item.count / max) * 100}%`;
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = item.value; // textContent: values come from event senders
      label.title = item.value;
      const number = document.createElement("span");
      number.className = "count";
      number.textContent = figure(item.count);
      row.dataset.value = item.value;
      row.append(fill, label, number);
      list.appendChild(row);
    }
  }

  async function loadBreakdowns() {
    const chosen = RANGES[range];
    await Promise.all(BREAKDOWNS.map(async (base) => {
      const reply = await api(`/api/v1/breakdown/${base}?from=${chosen.from}&limit=8`);
      if (reply.status === 200) drawBars(base, reply.body.data);
      // 404 metric_not_found: the daemon's rules have no such family (custom rules).
      else if (reply.status === 404) drawBars(base, { items: [] }, "not tracked by this daemon");
    }));
    for (const node of document.querySelectorAll(".range-label")) {
      node.textContent = `(${chosen.label})`;
    }
    for (const node of document.querySelectorAll(".range-text")) node.textContent = chosen.label;
  }

  // -- the metric list: counters to chart, families to break down ------------------------

  // Splits at the separators that no backslash escapes (escapes are kept).
  function splitUnescaped(text, separator) {
    const parts = [];
    let current = "";
    let escaped = false;
    for (const char of text) {
      if (escaped) {
        current += "\\" + char;
        escaped = false;
      } else if (char === "\\") {
        escaped = true;
      } else if (char === separator) {
        parts.push(current);
        current = "";
      } else {
        current += char;
      }
    }
    parts.push(current);
    return parts;
  }

  // The label names of a series key of a family with several labels
  // ("country=de,plan=pro", in name order, "\" escaping , = and \ in values), else null:
  // a family with one label keys its series by the bare value.
  function labelNamesOf(key) {
    const parts = splitUnescaped(key, ",");
    if (parts.length < 2 || parts.length > MAX_LABELS) return null;
    const names = [];
    for (const part of parts) {
      const pieces = splitUnescaped(part, "=");
      if (pieces.length !== 2) return null;
      const name = pieces[0].replace(/\\(.)/g, "$1");
      if (!LABEL_NAME.test(name) || (names.length && names[names.length - 1] >= name)) {
        return null;
      }
      names.push(name);
    }
    return names;
  }

  function addToCatalog(found, name, view) {
    const colon = name.indexOf(":");
    if (colon < 0) {
      if (view.type === "counter") found.counters.add(name);
      return;
    }
    const base = name.slice(0, colon);
    const key = name.slice(colon + 1);
    let family = found.families.get(base);
    if (!family) {
      family = { kind: view.type, labels: undefined };
      found.families.set(base, family);
    }
    if (view.type === "counter" && !NOT_CHARTED.has(base)) found.counters.add(base);
    if (key === OTHER_KEY) return;
    const labels = labelNamesOf(key);
    if (family.labels === undefined) family.labels = labels;
    else if (family.labels && (!labels || labels.join() !== family.labels.join())) {
      family.labels = null; // keys of different shapes: one label whose values hold "="
    }
  }

  // Every metric, a page at a time: only names and types are kept.
  async function readCatalog() {
    const found = { counters: new Set([DEFAULT_METRIC]), families: new Map() };
    let after = null;
    let pages = 0;
    while (pages < LIST_MAX_PAGES) {
      let path = `/api/v1/metrics?limit=${LIST_PAGE}`;
      if (after) path += "&after=" + encodeURIComponent(after);
      const reply = await api(path);
      pages += 1;
      if (reply.status !== 200 || !reply.body) throw new Error(`metric list: ${reply.status}`);
      for (const [name, view] of Object.entries(reply.body.data || {})) {
        addToCatalog(found, name, view || {});
      }
      after = reply.body.meta && reply.body.meta.next;
      if (!after) break;
    }
    for (const family of found.families.values()) family.labels = family.labels || null;
    return {
      counters: [...found.counters].sort(),
      families: new Map([...found.families].sort(([a], [b]) => (a < b ? -1 : 1))),
      loaded: true,
      pages,
    };
  }

  async function refreshCatalog() {
    if (catalogBusy) {
      catalogAgain = true;
      return;
    }
    catalogBusy = true;
    catalogTotal = lastTotal;
    try {
      const before = { ...breakdownChoice(), loaded: catalog.loaded };
      const read = await readCatalog();
      catalogGap = Math.min(LIST_GAP_MAX_MS, LIST_GAP_MS * read.pages);
      catalog = read;
      renderPickers();
      const after = breakdownChoice();
      // The first list, or a new family to show: draw the breakdown now, not at the next tick.
      if (!before.loaded || before.base !== after.base || before.by !== after.by) {
        await loadChosenBreakdown();
      }
    } catch (error) {
      if (error instanceof AuthError) needKey(error.message);
      // Otherwise the pickers keep what they list; the next change of the totals retries.
      else catalogTotal = undefined;
    } finally {
      catalogBusy = false;
      catalogAt = Date.now();
      if (catalogAgain) {
        catalogAgain = false;
        requestCatalog();
      }
    }
  }

  // Reads the list again once LIST_GAP_MS (more for a long list) has passed since the last.
  function requestCatalog() {
    if (catalogTimer || !refreshTimer) return; // one is due, or the page is stopped
    const wait = Math.max(0, catalogAt + catalogGap - Date.now());
    catalogTimer = setTimeout(() => {
      catalogTimer = null;
      refreshCatalog();
    }, wait);
  }

  function fillSelect(select, entries, chosen) {
    // Rebuilt only when the list changed: an open drop-down is not closed under the user.
    const signature = JSON.stringify(entries);
    if (select.dataset.signature !== signature) {
      select.replaceChildren(...entries.map(([value, text]) => {
        const option = document.createElement("option");
        option.value = value;
        option.textContent = text; // textContent: names come from the daemon's config
        return option;
      }));
      select.dataset.signature = signature;
    }
    if (chosen !== null) select.value = chosen;
  }

  function breakdownChoice() {
    const families = catalog.families;
    let base = chosenFamily;
    if (base === null) {
      // The first family that the cards above do not already show, else the first one.
      const bases = [...families.keys()];
      base = bases.find((name) => !BREAKDOWNS.includes(name)) || bases[0] || null;
    }
    const family = base === null ? undefined : families.get(base);
    const labels = family && family.labels;
    let by = chosenBy;
    if (labels && !labels.includes(by)) by = labels[0];
    if (family && !labels) by = null; // one label: the daemon knows which
    return { base, by, family, labels };
  }

  function renderPickers() {
    const unseen = (name) => (catalog.loaded ? `${name} (no data yet)` : name);
    const counters = catalog.counters.map((name) => [name, name]);
    if (!catalog.counters.includes(chartMetric)) counters.push([chartMetric, unseen(chartMetric)]);
    fillSelect($("chart-metric"), counters, chartMetric);

    const { base, by, family, labels } = breakdownChoice();
    const families = [...catalog.families].map(([name, { kind }]) => [
      name, KINDS[kind] ? `${name} (${KINDS[kind]})` : name,
    ]);
    if (base !== null && !family) families.push([base, unseen(base)]);
    const select = $("breakdown-family");
    fillSelect(select, families, base);
    select.disabled = families.length === 0;
    $("breakdown-by-picker").hidden = !labels;
    fillSelect($("breakdown-by"), (labels || []).map((name) => [name, name]), by);
  }

  function breakdownError(base, reply) {
    const message = reply.body && reply.body.message;
    switch (reply.status) {
      case 400: return `cannot break ${base} down: ${message || "the daemon refused the query"}`;
      case 404: return `${base} is not a metric family this daemon knows (yet)`;
      case 429: return "too many requests; trying again shortly";
      case 503: return "history is unavailable right now; trying again shortly";
      default: return `the daemon answered ${reply.status}${message ? ": " + message : ""}`;
    }
  }

  async function loadChosenBreakdown(retried = false) {
    const chosen = RANGES[range];
    const { base, by, family } = breakdownChoice();
    const request = ++breakdownRequest;
    if (base === null) {
      drawMessage("breakdown", catalog.loaded
        ? "no labelled metric yet: its values show here once events carry the label"
        : "loading the metrics…");
      return;
    }
    let path = `/api/v1/breakdown/${encodeURIComponent(base)}` +
      `?from=${chosen.from}&limit=${BREAKDOWN_LIMIT}`;
    if (by) path += "&by=" + encodeURIComponent(by);
    let reply;
    try {
      reply = await api(path);
    } catch (error) {
      if (error instanceof AuthError) throw error;
      if (request === breakdownRequest) {
        drawMessage("breakdown", "the daemon cannot be reached", true);
      }
      return;
    }
    if (request !== breakdownRequest) return; // the choice changed meanwhile: a newer one draws
    const body = reply.body || {};
    if (reply.status === 400 && !by && body.parameter === "by" && family && !retried) {
      // Several labels that the series names did not tell: the answer lists them.
      const listed = /one of (.+)$/.exec(body.message || "");
      const labels = listed && listed[1].split(", ").filter((name) => LABEL_NAME.test(name));
      if (labels && labels.length > 1) {
        family.labels = labels;
        renderPickers();
        await loadChosenBreakdown(true);
        return;
      }
    }
    if (reply.status === 200 && body.data) drawBars("breakdown", body.data);
    else drawMessage("breakdown", breakdownError(base, reply), true);
  }

  // -- web analytics: the site picker, the site's figures and lists, the snippet ---------

  function shownSite() {
    if (chosenSite !== null) return chosenSite;
    return web.sites.length ? web.sites[0] : ALL_SITES;
  }

  const siteFilter = (site) => (site ? "&site=" + encodeURIComponent(site) : "");

  function visitLength(seconds) {
    const whole = Math.round(seconds);
    if (whole < 60) return `${whole} s`;
    if (whole < 3600) return `${Math.floor(whole / 60)} min ${whole % 60} s`;
    return `${Math.floor(whole / 3600)} h ${Math.round((whole % 3600) / 60)} min`;
  }

  // Site names come from event senders: escaped for the attribute they land in, so a hostile
  // name cannot make the snippet a user pastes into their pages run anything.
  const attribute = (text) => text.replace(/[&"<>]/g, (c) => `&#${c.charCodeAt(0)};`);

  function renderSnippet() {
    const code = $("snippet");
    const site = shownSite() || PLACEHOLDER_SITE;
    // The daemon's own address as this page reaches it; the path is the configured one.
    const source = window.location.origin + code.dataset.scriptPath;
    code.textContent =
      `<script defer data-domain="${attribute(site)}" src="${attribute(source)}"></script>`;
    $("snippet-site").textContent = shownSite() || "your site";
  }

  function renderWeb() {
    $("web").hidden = !web.enabled;
    $("site-picker-label").hidden = !web.enabled;
    if (!web.enabled) return;
    const site = shownSite();
    const entries = [[ALL_SITES, "All sites"], ...web.sites.map((name) => [name, name])];
    if (site && !web.sites.includes(site)) entries.push([site, `${site} (no recent visitors)`]);
    const picker = $("site-picker");
    fillSelect(picker, entries, site);
    picker.disabled = entries.length < 2;
    const empty = !site && !web.sites.length;
    $("web-empty").hidden = !empty;
    $("web-figures").hidden = empty;
    $("web-site-name").textContent = site ? `· ${site}` : "· all sites";
    renderSnippet();
  }

  // The stream's figures of the last 5 minutes (null: the daemon has no per-site metrics).
  function renderWebNow(now) {
    if (!now || !web.enabled) return;
    const site = shownSite();
    let figures = now;
    if (site) {
      // Not named: no visitor now, unless the stream named as many sites as it can.
      const unknown = Object.keys(now.sites).length >= SITES_LIMIT;
      figures = now.sites[site] || (unknown ? { visitors: null, pageviews: null }
        : { visitors: 0, pageviews: 0 });
    }
    show("web_visitors_now", count(figures.visitors));
    // New visitors or pageviews for the shown site: its figures for the range are stale.
    const signal = `${site}|${figures.visitors}|${figures.pageviews}`;
    if (webSignal !== undefined && signal !== webSignal) requestWeb();
    webSignal = signal;
    if (Object.keys(now.sites).some((name) => !web.sites.includes(name))) requestSites();
  }

  // Polling instead of the stream: the shown site's figures of the last 5 minutes.
  async function pollWebNow() {
    if (!web.enabled) return undefined;
    const site = shownSite();
    const query = "?from=-5m" + siteFilter(site);
    const [visitors, pageviews] = await Promise.all([
      metricValue("visitors", query), metricValue("site_pageviews", query),
    ]);
    const figures = { visitors: visitors.value, pageviews: pageviews.value };
    return site ? { visitors: null, pageviews: null, sites: { [site]: figures } }
      : { ...figures, sites: {} };
  }

  // Reads the site list; true when the site shown changed (its figures are to be loaded).
  async function loadSites() {
    sitesAt = Date.now();
    const reply = await api(
      `/api/v1/breakdown/visitors?by=site&limit=${SITES_LIMIT}&from=${SITES_FROM}`);
    const before = shownSite();
    if (reply.status === 400 || reply.status === 404) {
      web.enabled = false; // no per-site visitors: the daemon runs without metrics.web
    } else if (reply.status === 200 && reply.body && reply.body.data) {
      web.enabled = true;
      web.sites = reply.body.data.items.map((item) => item.value);
    } else {
      return false; // the picker keeps its list; the next reading tries again
    }
    renderWeb();
    if (shownSite() === before) return false;
    webSignal = undefined;
    return true;
  }

  function requestSites() {
    if (sitesTimer || !refreshTimer) return;
    const wait = Math.max(0, sitesAt + SITES_GAP_MS - Date.now());
    sitesTimer = setTimeout(() => {
      sitesTimer = null;
      refreshChosen(async () => {
        if (await loadSites()) await loadWeb();
      });
    }, wait);
  }

  function requestWeb() {
    if (webTimer || !refreshTimer) return;
    const wait = Math.max(0, webAt + WEB_GAP_MS - Date.now());
    webTimer = setTimeout(() => {
      webTimer = null;
      refreshChosen(loadWeb);
    }, wait);
  }

  function renderWebSummary(data) {
    show("web_visitors", count(data.visitors));
    show("web_visits", count(data.visits));
    show("web_pageviews", count(data.pageviews));
    show("web_views_per_visit", rate(data.views_per_visit));
    show("web_bounce_rate", dash(data.bounce_rate, (v) => percent.format(v)));
    show("web_visit_duration", dash(data.visit_duration, visitLength));
  }

  // One list of a card: the family and label of its selected tab, for the shown site.
  async function loadWebList(tab) {
    const list = tab.getAttribute("aria-controls");
    const base = list.slice("bars-".length);
    const family = tab.dataset.family;
    const request = (listRequests.get(list) || 0) + 1;
    listRequests.set(list, request);
    const reply = await api(`/api/v1/breakdown/${family}?by=${tab.dataset.by}` +
      `${siteFilter(shownSite())}&from=${RANGES[range].from}&limit=${WEB_LIST_LIMIT}`);
    if (listRequests.get(list) !== request) return; // a newer tab, site or range draws
    if (reply.status === 200 && reply.body && reply.body.data) {
      drawBars(base, reply.body.data, "no visits in this range");
    } else {
      drawMessage(base, breakdownError(family, reply), true);
    }
    $(list).dataset.family = family; // what the list shows now
  }

  async function loadWeb() {
    if (!web.enabled) return;
    webAt = Date.now();
    const request = ++webRequest;
    const tabs = document.querySelectorAll('#web [role="tab"][aria-selected="true"]');
    const [summary] = await Promise.all([
      api(`/api/v1/web?from=${RANGES[range].from}${siteFilter(shownSite())}`),
      ...[...tabs].map(loadWebList),
    ]);
    if (request !== webRequest) return;
    if (summary.status === 200 && summary.body && summary.body.data) {
      renderWebSummary(summary.body.data);
    }
  }

  async function refreshWeb() {
    if (web.enabled === null || Date.now() - sitesAt >= SITES_REFRESH_MS) await loadSites();
    await loadWeb();
  }

  function selectTab(tab) {
    for (const other of tab.parentElement.querySelectorAll('[role="tab"]')) {
      other.setAttribute("aria-selected", String(other === tab));
      other.tabIndex = other === tab ? 0 : -1;
    }
    // Never the last tab's bars under this tab's name while its own are on their way.
    const list = tab.getAttribute("aria-controls");
    drawMessage(list.slice("bars-".length), "loading…");
    delete $(list).dataset.family;
    if (web.enabled) refreshChosen(() => loadWebList(tab));
  }

  async function copySnippet() {
    const code = $("snippet");
    let copied = false;
    try {
      await navigator.clipboard.writeText(code.textContent);
      copied = true;
    } catch {
      // No clipboard API (a plain-http address other than localhost) or refused: select the
      // text so that the usual keys copy it.
      const selection = window.getSelection();
      const text = document.createRange();
      text.selectNodeContents(code);
      selection.removeAllRanges();
      selection.addRange(text);
    }
    $("copy-status").textContent = copied ? "Copied." : "Selected: press Ctrl+C (⌘C) to copy.";
  }

  // -- the hash: what the chart, the breakdown and the web view show -----------------------------------

  function readHash() {
    const params = new URLSearchParams(window.location.hash.slice(1));
    chartMetric = params.get("metric") || DEFAULT_METRIC;
    chosenFamily = params.get("breakdown") || null;
    chosenBy = params.get("by") || null;
    chosenSite = params.has("site") ? params.get("site") : null; // site= is every site
  }

  function writeHash() {
    const params = new URLSearchParams();
    if (chartMetric !== DEFAULT_METRIC) params.set("metric", chartMetric);
    if (chosenFamily !== null) params.set("breakdown", chosenFamily);
    if (chosenBy !== null) params.set("by", chosenBy);
    if (chosenSite !== null) params.set("site", chosenSite);
    const hash = params.toString();
    // replaceState: no history entry per choice, and no hashchange event back to us.
    const { pathname, search } = window.location;
    window.history.replaceState(null, "", pathname + search + (hash ? "#" + hash : ""));
  }

  async function refreshHistory() {
    try {
      await Promise.all([loadSeries(), loadBreakdowns(), loadChosenBreakdown(), refreshWeb()]);
    } catch (error) {
      if (error instanceof AuthError) needKey(error.message);
    }
  }

  async function refreshChosen(loader) {
    try {
      await loader();
    } catch (error) {
      if (error instanceof AuthError) needKey(error.message);
    }
  }

  function scheduleHistory() {
    if (refreshTimer) clearInterval(refreshTimer);
    refreshHistory();
    refreshTimer = setInterval(refreshHistory, RANGES[range].refresh);
  }

  // -- API key --------------------------------------------------------------------------

  function stopAll() {
    if (source) source.close();
    source = null;
    stopPolling();
    for (const timer of [refreshTimer, watchdog]) if (timer) clearInterval(timer);
    for (const timer of [sseRetry, catalogTimer, webTimer, sitesTimer]) {
      if (timer) clearTimeout(timer);
    }
    refreshTimer = watchdog = sseRetry = catalogTimer = webTimer = sitesTimer = null;
  }

  function needKey(message) {
    stopAll();
    setConnection("key", "API key needed");
    $("key-form").hidden = false;
    const error = $("key-error");
    error.hidden = !apiKey();
    error.textContent = apiKey() ? message : "";
    $("key-input").focus();
  }

  async function start() {
    stopAll();
    try {
      await api("/api/v1/stats"); // 401/403 here: ask for a key before opening anything
    } catch (error) {
      if (error instanceof AuthError) {
        needKey(error.message);
        return;
      }
    }
    $("key-form").hidden = true;
    $("forget-key").hidden = !apiKey();
    connectStream();
    lastMessage = Date.now();
    watchdog = setInterval(() => {
      if (Date.now() - lastMessage > STALE_MS) startPolling();
    }, 2000);
    scheduleHistory();
    refreshCatalog();
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("key-input").value.trim();
    if (!value) return;
    try { sessionStorage.setItem(KEY_NAME, value); } catch { /* private mode: this load only */ }
    $("key-input").value = "";
    start();
  });

  $("forget-key").addEventListener("click", () => {
    try { sessionStorage.removeItem(KEY_NAME); } catch { /* nothing kept */ }
    window.location.reload();
  });

  for (const button of document.querySelectorAll("[data-range]")) {
    button.addEventListener("click", () => {
      range = button.dataset.range;
      for (const other of document.querySelectorAll("[data-range]")) {
        other.setAttribute("aria-checked", String(other === button));
      }
      scheduleHistory();
    });
  }

  $("chart-metric").addEventListener("change", (event) => {
    chartMetric = event.target.value || DEFAULT_METRIC;
    writeHash();
    refreshChosen(loadSeries);
  });

  $("breakdown-family").addEventListener("change", (event) => {
    chosenFamily = event.target.value || null;
    chosenBy = null; // the new family's first label
    writeHash();
    renderPickers();
    refreshChosen(loadChosenBreakdown);
  });

  $("breakdown-by").addEventListener("change", (event) => {
    chosenBy = event.target.value || null;
    writeHash();
    refreshChosen(loadChosenBreakdown);
  });

  // Opening a picker is a good time to look for metrics that appeared meanwhile.
  for (const id of ["chart-metric", "breakdown-family"]) {
    $(id).addEventListener("focus", requestCatalog);
  }

  $("site-picker").addEventListener("change", (event) => {
    chosenSite = event.target.value; // ALL_SITES or one site
    writeHash();
    renderWeb();
    webSignal = undefined;
    refreshChosen(loadWeb);
  });

  for (const tablist of document.querySelectorAll('#web [role="tablist"]')) {
    const tabs = [...tablist.querySelectorAll('[role="tab"]')];
    for (const tab of tabs) {
      tab.tabIndex = tab.getAttribute("aria-selected") === "true" ? 0 : -1;
      tab.addEventListener("click", () => selectTab(tab));
    }
    // The tabs pattern: arrows, Home and End move between the tabs of a list.
    tablist.addEventListener("keydown", (event) => {
      const at = tabs.indexOf(document.activeElement);
      if (at < 0) return;
      const to = { ArrowLeft: at - 1, ArrowRight: at + 1, Home: 0, End: tabs.length - 1 }[event.key];
      if (to === undefined) return;
      event.preventDefault();
      const tab = tabs[(to + tabs.length) % tabs.length];
      tab.focus();
      selectTab(tab);
    });
  }

  $("copy-snippet").addEventListener("click", copySnippet);

  window.addEventListener("hashchange", () => {
    readHash();
    renderPickers();
    renderWeb();
    refreshChosen(loadSeries);
    refreshChosen(loadChosenBreakdown);
    refreshChosen(loadWeb);
  });

  readHash();
  renderPickers();
  start();
})();
