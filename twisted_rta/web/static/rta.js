/* twisted-rta's tracker: pageviews (SPAs too), custom events, outbound links and downloads,
   in Plausible's Events API format. No cookies, no storage. README: "Web analytics". */
(function () {
  "use strict";
  var w = window, d = document, l = location, n = navigator;
  if (w.rta && w.rta.loaded) return; // the snippet twice on a page counts once

  var script = d.currentScript;
  function option(name) {
    return script && script.getAttribute("data-" + name);
  }
  function flag(name) {
    return option(name) != null;
  }
  function globs(name) {
    var value = option(name);
    return value && value.split(",").map(function (glob) {
      var text = glob.trim().replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*");
      return new RegExp("^" + text + "$");
    });
  }
  function matches(list, path) {
    return list.some(function (glob) { return glob.test(path); });
  }

  // The daemon writes tracker.endpoint_path here when it serves this file.
  var endpoint = option("api") || (script ? new URL(script.src).origin : "") + "/api/event";
  var domain = option("domain") || l.hostname;
  var hashRouting = flag("hash");
  var include = globs("include"), exclude = globs("exclude");

  function page() {
    return l.pathname + (hashRouting ? l.hash : "");
  }
  function ignored() {
    if (/^localhost$|^127(\.\d+){3}$|^\[::1\]$/.test(l.hostname) || l.protocol === "file:") {
      return true;
    }
    if (n.webdriver && !w.rtaAllowAutomation) return true;
    if (flag("do-not-track") && n.doNotTrack === "1") return true;
    try {
      if (localStorage.rta_ignore === "true") return true; // read, never written
    } catch (error) { /* storage blocked */ }
    return (include && !matches(include, page())) || (exclude && matches(exclude, page()));
  }

  function send(name, options) {
    var done = options.callback;
    if (ignored() || !w.fetch) return done && done();
    var url = new URL(options.url || l.href);
    if (!hashRouting) url.hash = "";
    if (flag("exclude-search")) url.search = "";
    var body = { n: name, u: url.href, d: domain, r: d.referrer || null };
    if (options.props) body.p = options.props;
    if (options.revenue) body.$ = options.revenue;
    if (options.interactive === false) body.i = false;
    fetch(endpoint, {
      method: "POST",
      body: JSON.stringify(body),
      keepalive: true, // delivered even when the page is being left
      headers: { "Content-Type": "text/plain" } // no CORS preflight
    }).then(function (response) {
      if (done) done({ status: response.status });
    }, function (error) {
      if (done) done({ error: error });
    });
  }

  // One pageview per page (a replaceState that changed only the query sends none); a
  // prerendered page counts once shown.
  var lastPage;
  function pageview() {
    if (page() === lastPage || d.prerendering || d.visibilityState === "prerender") return;
    lastPage = page();
    send("pageview", {});
  }

  var history = w.history;
  ["pushState", "replaceState"].forEach(function (method) {
    var original = history[method];
    history[method] = function () {
      original.apply(this, arguments);
      pageview();
    };
  });
  w.addEventListener("popstate", pageview);
  if (hashRouting) w.addEventListener("hashchange", pageview);
  d.addEventListener("visibilitychange", pageview);
  d.addEventListener("prerenderingchange", pageview);

  var FILE = /\.(pdf|xlsx?|docx?|od[tsp]|txt|rtf|csv|exe|key|pp[st]x?|7z|pkg|rar|t?gz|xz|zip|avi|mov|mp[34]|mpe?g|webm|wmv|midi?|wav|flac|dmg|iso|msi|apk|epub)$/i;
  function onClick(event) {
    if (event.type === "auxclick" && event.button !== 1) return; // a middle click only
    var link = event.target.closest && event.target.closest("a[href]");
    if (!link) return;
    var url = new URL(link.href, l.href);
    if (flag("downloads") && FILE.test(url.pathname)) {
      send("download", { props: { url: url.href } });
    } else if (flag("outbound") && /^https?:$/.test(url.protocol) && url.host !== l.host) {
      send("outbound", { props: { url: url.href } });
    }
  }
  d.addEventListener("click", onClick);
  d.addEventListener("auxclick", onClick);

  // rta("signup", {props: {plan: "pro"}}), options: props, revenue, interactive, url,
  // callback. The calls the snippet's stub queued (rta.q) go now.
  var queued = (w.rta && w.rta.q) || [];
  w.rta = function (name, options) {
    send(name, options || {});
  };
  w.rta.loaded = true;
  for (var i = 0; i < queued.length; i++) w.rta.apply(w, queued[i]);
  pageview();
})();
