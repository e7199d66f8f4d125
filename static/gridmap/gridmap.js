/* gridmap: the layers of the city map, drawn from the app's own display files.
 *
 * Loaded by the streamlit-folium iframe after Leaflet and Leaflet.markercluster; ui/mapview.py
 * calls gridmap.mount(map, config). Formats: layers/display.py ("gridmap-polygons/1",
 * "gridmap-entity-tile/1"). Every text from the data goes through esc() before it becomes HTML
 * (Leaflet sets tooltip and popup strings as innerHTML); nothing from the data is ever run as
 * code, and a key from the data is looked up only among an object's own properties (own()),
 * so a grid coded "constructor" or a status "__proto__" finds nothing instead of Object's.
 * When the layers are drawn the map container gets data-gridmap="ready" (or "error") and
 * window.gridmapStats tells what was drawn, for tests and the benchmark.
 *
 * Clicks (cfg.clicks): a click anywhere routes — on the map, on a marker (its position), on a
 * cluster (the point under the mouse; it still zooms in) and "在此处查询归属" in a popup — all
 * as one map click, which streamlit-folium reports as last_clicked (see clicks()). An incident
 * popup links to its case (cfg.incidents.casePage): the component's iframe is sandboxed
 * without allow-top-navigation, so a plain click asks the page (openCase()) to switch to the
 * case page, in the same session; a middle or Ctrl click opens it in a new tab.
 */
(function () {
  "use strict";

  var ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  function esc(v) {
    return String(v === null || v === undefined ? "" : v).replace(/[&<>"']/g, function (c) {
      return ESC[c];
    });
  }
  // obj[key] when it is obj's own property (key from the data), else undefined.
  function own(obj, key) {
    return obj && Object.prototype.hasOwnProperty.call(obj, key) ? obj[key] : undefined;
  }

  /* Boot: streamlit-folium loads its scripts one after another and runs the map script only
   * after the last. This file comes first (ui/mapview.py puts it before Leaflet), so it starts
   * what the map needs at once: the layer files of the first view, the styles, and a preload of
   * the marker cluster plugin — all named in its own URL (?pre=…&css=…&js=…). */
  var early = {};
  function abs(url) { return new URL(url, document.baseURI).href; }
  function boot(cfg) {
    (cfg.css || []).forEach(function (href) {
      var url = abs(href);
      var have = Array.prototype.some.call(document.querySelectorAll("link[data-gm]"), function (l) {
        return l.getAttribute("data-gm") === url;  // no selector built from a URL
      });
      if (have) { return; }
      var link = document.createElement("link");
      link.rel = "stylesheet"; link.href = href; link.setAttribute("data-gm", url);
      document.head.appendChild(link);
    });
    (cfg.js || []).forEach(function (src) {
      var link = document.createElement("link");
      link.rel = "preload"; link.as = "script"; link.href = src;
      document.head.appendChild(link);
    });
    (cfg.prefetch || []).forEach(function (url) {
      if (!early[abs(url)]) { early[abs(url)] = fetch(url, { credentials: "same-origin" }); }
    });
  }
  (function () {
    var me = document.currentScript && document.currentScript.src;
    if (!me) { return; }
    var q = new URL(me).searchParams;
    var list = function (k) { return (q.get(k) || "").split(",").filter(Boolean); };
    boot({ prefetch: list("pre"), css: list("css"), js: list("js") });
  })();

  function loadScripts(list, done, failed) {
    var left = list.length;
    if (!left) { done(); return; }
    list.forEach(function (src) {
      var s = document.createElement("script");
      s.src = src; s.async = false;  // run in this order
      s.onload = function () { if (--left === 0) { done(); } };
      s.onerror = function () { failed(src); };
      document.head.appendChild(s);
    });
  }

  var files = {};
  function load(url, tries) {
    // A file of the background part may not be written yet: retry a few times.
    if (!files[url]) {
      var started = early[abs(url)];
      delete early[abs(url)];
      files[url] = (started || fetch(url, { credentials: "same-origin" })).then(function (r) {
        if (!r.ok) { throw new Error(url + " → HTTP " + r.status); }
        return r.json();
      }).catch(function (err) {
        delete files[url];
        if ((tries || 0) < 8) {
          return new Promise(function (ok) { setTimeout(ok, 1500); }).then(function () {
            return load(url, (tries || 0) + 1);
          });
        }
        throw err;
      });
    }
    return files[url];
  }

  // Web-mercator tile indexes at zoom z (as layers/display.py mercator_tile).
  function tileX(lng, z) {
    var n = Math.pow(2, z);
    return Math.min(n - 1, Math.max(0, Math.floor((lng + 180) / 360 * n)));
  }
  function tileY(lat, z) {
    var n = Math.pow(2, z), r = Math.max(-85.0511, Math.min(85.0511, lat)) * Math.PI / 180;
    return Math.min(n - 1, Math.max(0, Math.floor((1 - Math.log(Math.tan(r) + 1 / Math.cos(r)) / Math.PI) / 2 * n)));
  }
  // "tx_ty" of the tiles at zoom z that cover the map's view.
  function tilesInView(map, z) {
    var b = map.getBounds(), out = [];
    for (var tx = tileX(b.getWest(), z); tx <= tileX(b.getEast(), z); tx++) {
      for (var ty = tileY(b.getNorth(), z); ty <= tileY(b.getSouth(), z); ty++) { out.push(tx + "_" + ty); }
    }
    return out;
  }

  function decodeRing(flat, scale) {
    var out = new Array(flat.length / 2), x = 0, y = 0;
    for (var i = 0, j = 0; i < flat.length; i += 2, j++) {
      x += flat[i]; y += flat[i + 1];
      out[j] = [y / scale, x / scale];
    }
    return out;
  }
  function decodeGeom(parts, scale) {
    return parts.map(function (rings) {
      return rings.map(function (r) { return decodeRing(r, scale); });
    });
  }
  function prop(data, key, i) {
    var col = data.props[key];
    if (!col) { return ""; }
    var d = own(data.dicts, key);
    return d ? d[col[i]] : col[i];
  }

  function assign(target) {
    for (var a = 1; a < arguments.length; a++) {
      var src = arguments[a] || {};
      for (var k in src) { if (Object.prototype.hasOwnProperty.call(src, k)) { target[k] = src[k]; } }
    }
    return target;
  }

  function tooltipFor(cfg, spec, data, i, workers) {
    var name = esc(prop(data, "n", i)), code = esc(prop(data, "c", i));
    var html = "<b>" + name + "</b> <span class=\"gm-code\">" + code + "</span>";
    var kinds = own(cfg.kindNames, spec.name);
    if (kinds && data.props.k) {
      var k = data.props.k[i];
      var cls = spec.name === "parks" && k === 0 ? " class=\"gm-chem\"" : "";
      html += "<br><span" + cls + ">" + esc(own(kinds, k)) + "</span>";
    }
    if (data.props.t) { html += " · " + esc(prop(data, "t", i)); }
    if (data.props.m && prop(data, "m", i)) { html += " · " + esc(prop(data, "m", i)); }
    if (data.props.p) { html += " · " + esc(prop(data, "p", i)); }
    if (spec.name === "jurisdictions") { html += "<br>" + esc(own(cfg.levelNames, prop(data, "l", i)) || ""); }
    if (spec.name === "grids") {
      var list = workers && own(workers, prop(data, "c", i));
      if (list === undefined && !workers) {
        html += "<br><span class=\"gm-muted\">" + esc(cfg.labels.loading) + "</span>";
      } else if (Array.isArray(list)) {
        html += list.map(function (w) {
          return "<br>" + esc(own(cfg.roleNames, w[2]) || w[2]) + " " + esc(w[0]) + " " + esc(w[1]);
        }).join("");
      }
    }
    return html;
  }

  function mount(map, cfg) {
    var container = map.getContainer();
    container.setAttribute("data-gridmap", "loading");
    var stats = window.gridmapStats = { drawn: {}, level: null, started: performance.now() };
    var panes = { fill: "gm-fill", lines: "gm-lines" };
    map.createPane(panes.fill).style.zIndex = 380;
    map.createPane(panes.lines).style.zIndex = 390;
    map.getPane(panes.lines).classList.add("gm-lines-pane");
    var canvas = L.canvas({ pane: panes.fill, tolerance: 0, padding: 0.3 });
    var svg = L.svg({ pane: panes.lines, padding: 0.3 });
    var groups = {}, overlays = {}, workers = null, workersLoading = null;
    window.gridmap.groups = groups;  // for tests and the browser console
    var currentLevel = null;

    function levelFor(zoom) {
      for (var i = 0; i < cfg.levels.length; i++) {
        if (zoom <= cfg.levels[i].maxZoom) { return cfg.levels[i].index; }
      }
      return cfg.levels[cfg.levels.length - 1].index;
    }

    function loadWorkers() {
      if (!workersLoading) {
        workersLoading = load(cfg.base + "grid_workers.json").then(function (w) { workers = w; return w; });
      }
      return workersLoading;
    }

    function fail(err) {
      container.setAttribute("data-gridmap", "error");
      stats.error = String(err && err.message || err);
      var box = L.DomUtil.create("div", "gm-error", container);
      box.textContent = cfg.labels.loadError + stats.error;
      if (window.console) { console.error("gridmap:", err); }
    }

    cfg.layers.forEach(function (spec) {
      var group = L.featureGroup();
      group.gmSpec = spec;
      group.bindTooltip(function (layer) {
        var html = tooltipFor(cfg, spec, layer.gmData, layer.gmIndex, workers);
        if (spec.name === "grids" && !workers) {
          loadWorkers().then(function () {
            if (group.isTooltipOpen()) { group.setTooltipContent(tooltipFor(cfg, spec, layer.gmData, layer.gmIndex, workers)); }
          });
        }
        return html;
      }, { sticky: true, direction: "top", offset: [0, -6], className: "gm-tip" });
      groups[spec.name] = group;
      overlays[swatch(spec.legend) + esc(spec.title)] = group;
      if (spec.on) { group.addTo(map); }
    });

    function addPolygons(spec, data, skip) {
      var group = groups[spec.name], added = 0;
      var base = assign({}, spec.style, { renderer: spec.canvas ? canvas : svg });
      var kindStyles = own(cfg.kindStyles, spec.name);
      for (var i = 0; i < data.count; i++) {
        if (!data.geoms[i].length || (skip && skip(prop(data, "c", i)))) { continue; }
        var style = kindStyles && data.props.k ? assign({}, base, own(kindStyles, data.props.k[i])) : base;
        var poly = L.polygon(decodeGeom(data.geoms[i], data.scale), style);
        poly.gmData = data; poly.gmIndex = i;
        group.addLayer(poly);
        added++;
      }
      return added;
    }

    function fill(spec, data) {
      var group = groups[spec.name];
      group.clearLayers();
      group.gmTiled = null;
      stats.ms = stats.ms || {};
      if (data.tiled) {  // too many to send whole: the tiles in view (layerTiles)
        group.gmTiled = { data: data, level: data.level, tiles: new Set(data.tiled.tiles),
                          loaded: new Set(), drawn: new Set(), count: 0 };
        stats.drawn[spec.name] = 0;
        return layerTiles(spec).then(function () {
          stats.ms[spec.name] = Math.round(performance.now() - stats.started);
        });
      }
      addPolygons(spec, data);
      stats.drawn[spec.name] = data.count;
      stats.ms[spec.name] = Math.round(performance.now() - stats.started);
    }

    // A layer sent per tile: fetch the tiles in view not fetched yet, draw each feature once
    // (a feature is in every tile it touches).
    function layerTiles(spec) {
      var group = groups[spec.name], t = group.gmTiled;
      if (!t) { return Promise.resolve(); }
      var jobs = tilesInView(map, t.data.tiled.zoom).filter(function (k) {
        return t.tiles.has(k) && !t.loaded.has(k);
      }).map(function (k) {
        t.loaded.add(k);
        return load(cfg.base + spec.name + "." + t.level + "." + k + ".json").then(function (d) {
          if (group.gmTiled !== t) { return; }  // another band meanwhile
          t.count += addPolygons(spec, d, function (code) {
            if (t.drawn.has(code)) { return true; }
            t.drawn.add(code);
            return false;
          });
          stats.drawn[spec.name] = t.count;
          stats.layerTiles = (stats.layerTiles || 0) + 1;
        }, function (err) { t.loaded.delete(k); throw err; });
      });
      return Promise.all(jobs);
    }

    function showLevel(level) {
      if (level === currentLevel) { return Promise.resolve(); }
      var wanted = currentLevel = level;
      return Promise.all(cfg.layers.map(function (spec) {
        return load(cfg.base + spec.name + "." + level + ".json");
      })).then(function (all) {
        if (wanted !== currentLevel) { return; }  // zoomed on meanwhile
        // Refill in the configured order: the outlines share one SVG, drawn in order (a layer
        // sent per tile is on the canvas, where the order does not matter).
        var tiled = cfg.layers.map(function (spec, i) { return fill(spec, all[i]); });
        stats.level = level;
        container.setAttribute("data-level", String(level));
        return Promise.all(tiled);
      });
    }

    // -- supervised entities: clustered, details fetched by chunk when hovered or opened --------
    var entityDone = Promise.resolve();
    var chunks = {};
    function chunk(k) {
      if (!chunks[k]) { chunks[k] = load(cfg.base + "entities." + k + ".json"); }
      return chunks[k];
    }
    function entityHtml(e, row, full) {
      if (!row) {
        return "<span class=\"gm-muted\">" + esc(cfg.labels.loading) + "</span>" +
          (full ? actions(e.latlng) : "");
      }
      var html = "<b>" + esc(row[1]) + "</b>";
      if (!full) { return html + "<br>" + esc(e.permit) + " · " + esc(e.industry); }
      var rows = [
        [cfg.labels.creditCode, esc(row[0])], [cfg.labels.industry, esc(e.industry)],
        [cfg.labels.permit, esc(e.permit || cfg.labels.none)], [cfg.labels.inspection, esc(row[3])],
        [cfg.labels.address, esc(row[2])],
        [cfg.labels.grid, esc(row[5]) + " <span class=\"gm-code\">" + esc(row[4]) + "</span>"],
        [cfg.labels.township, esc(row[6])],
        [cfg.labels.workers, esc(row[7]).split("；").join("<br>")]
      ];
      return html + "<table class=\"gm-table\">" + rows.map(function (r) {
        return "<tr><th>" + esc(r[0]) + "</th><td>" + r[1] + "</td></tr>";
      }).join("") + "</table>" + actions(e.latlng);
    }
    function entityContent(layer, full, update) {
      var e = layer.gmEntity, k = Math.floor(e.pos / cfg.entities.chunk);
      var cached = chunks[k] && chunks[k].value;
      if (cached) { return entityHtml(e, cached.rows[e.pos % cfg.entities.chunk], full); }
      chunk(k).then(function (d) {
        chunks[k].value = d;
        update(entityHtml(e, d.rows[e.pos % cfg.entities.chunk], full));
      }).catch(function () { update(esc(cfg.labels.loadError)); });
      return entityHtml(e, null, full);
    }
    if (cfg.entities) {
      // Per zoom band (entities.index.json, layers/display.py ENTITY_BANDS) the tiles in view:
      // up to zoom 14 counts per square bin (a lone entity as itself), from zoom 15 every
      // entity, clustered by the plugin within the loaded tiles. Never all entities at once.
      var cluster = L.markerClusterGroup({
        maxClusterRadius: 55, showCoverageOnHover: false, spiderfyOnMaxZoom: true,
        disableClusteringAtZoom: 17, removeOutsideVisibleBounds: true
      });
      var bins = L.featureGroup();
      var entityLayer = L.layerGroup([cluster, bins]);
      groups.entities = cluster;
      groups.entityBins = bins;
      overlays[swatch(cfg.entities.legend) + esc(cfg.entities.title)] = entityLayer;
      if (cfg.entities.on) { entityLayer.addTo(map); }
      cluster.bindTooltip(function (layer) {
        return entityContent(layer, false, function (html) {
          if (layer.isTooltipOpen && cluster.isTooltipOpen()) { cluster.setTooltipContent(html); }
        });
      }, { direction: "top", offset: [0, -6], className: "gm-tip" });
      cluster.bindPopup(function (layer) {
        return entityContent(layer, true, function (html) { cluster.setPopupContent(html); });
      }, { maxWidth: 360, className: "gm-popup" });
      // A marker routes its own position (and opens its popup); a cluster or a bin the point
      // clicked (and zooms in, as it always did).
      cluster.on("click", function (e) { routeAt(e.layer.getLatLng()); });
      cluster.on("clusterclick", function (e) {
        routeAt(e.originalEvent ? map.mouseEventToLatLng(e.originalEvent) : e.latlng);
      });
      bins.bindTooltip(function (layer) {
        return "<b>" + esc(layer.gmCount) + "</b> " + esc(cfg.labels.binTip);
      }, { direction: "top", offset: [0, -16], className: "gm-tip" });
      bins.on("click", function (e) {
        routeAt(e.originalEvent ? map.mouseEventToLatLng(e.originalEvent) : e.latlng);
        map.setView(e.layer.getLatLng(), Math.min(map.getMaxZoom(), map.getZoom() + 2));
      });

      var entityIndex = null, shownBand = null, shown = {}, built = {}, entitySeq = 0;
      var entityIcons = {};
      function entityIcon(permit) {
        if (!own(entityIcons, permit)) {
          var color = own(cfg.entities.permitColors, permit) || cfg.entities.permitColors[""];
          entityIcons[permit] = L.divIcon({ className: "gm-ent", iconSize: [12, 12],
            html: "<span style=\"background:" + esc(color) + "\"></span>" });
        }
        return entityIcons[permit];
      }
      function binLabel(n) {
        return n < 10000 ? String(n) : (n / 10000).toFixed(n < 100000 ? 1 : 0) + cfg.labels.tenThousand;
      }
      function buildTile(d) {
        var out = { markers: [], bins: [], count: d.count };
        var p = d.points, x = 0, y = 0, pos = 0, i;
        for (i = 0; i < p.pos.length; i++) {
          x += p.xy[2 * i]; y += p.xy[2 * i + 1]; pos += p.pos[i];
          var permit = d.permit[p.s[i]];
          var m = L.marker([y / d.scale, x / d.scale], { icon: entityIcon(permit), keyboard: false });
          m.gmEntity = { pos: pos, permit: permit, industry: d.industry[p.i[i]], latlng: m.getLatLng() };
          out.markers.push(m);
        }
        x = 0; y = 0;
        for (i = 0; i < d.bins.n.length; i++) {
          x += d.bins.xy[2 * i]; y += d.bins.xy[2 * i + 1];
          var n = d.bins.n[i];
          var size = n < 10 ? "small" : n < 100 ? "medium" : "large";
          var b = L.marker([y / d.scale, x / d.scale], { keyboard: false, icon: L.divIcon({
            className: "marker-cluster marker-cluster-" + size + " gm-bin", iconSize: [40, 40],
            html: "<div><span>" + esc(binLabel(n)) + "</span></div>" }) });
          b.gmCount = n;
          out.bins.push(b);
        }
        return out;
      }
      function entityBand(zoom) {
        var bands = entityIndex.bands;
        for (var i = 0; i < bands.length; i++) { if (zoom <= bands[i].maxZoom) { return bands[i]; } }
        return bands[bands.length - 1];
      }
      // The band of the zoom, the tiles of the view that have entities: fetch the missing
      // ones, drop those out of view.
      function refreshEntities() {
        if (!entityIndex) { return Promise.resolve(); }
        var band = entityBand(map.getZoom());
        var wanted = tilesInView(map, band.tileZoom).filter(function (k) {
          return own(band.tiles, k) !== undefined;
        });
        var seq = ++entitySeq;
        var urls = wanted.map(function (k) { return cfg.base + "entities.b" + band.index + "." + k + ".json"; });
        return Promise.all(urls.map(function (u) { return load(u); })).then(function (all) {
          if (seq !== entitySeq) { return; }  // moved on meanwhile
          if (shownBand !== band.index) {
            cluster.clearLayers(); bins.clearLayers(); shown = {}; shownBand = band.index;
          }
          var keep = {}, gone = [], added = [];
          wanted.forEach(function (k) { keep[k] = true; });
          Object.keys(shown).forEach(function (k) {
            if (keep[k]) { return; }
            Array.prototype.push.apply(gone, shown[k].markers);
            shown[k].bins.forEach(function (m) { bins.removeLayer(m); });
            delete shown[k];
          });
          wanted.forEach(function (k, i) {
            if (shown[k]) { return; }
            var t = built[urls[i]] || (built[urls[i]] = buildTile(all[i]));
            shown[k] = t;
            Array.prototype.push.apply(added, t.markers);
            t.bins.forEach(function (m) { bins.addLayer(m); });
          });
          if (gone.length) { cluster.removeLayers(gone); }
          if (added.length) { cluster.addLayers(added); }
          var count = 0;
          Object.keys(shown).forEach(function (k) { count += shown[k].count; });
          stats.drawn.entities = count;
          stats.entityBand = band.index;
          stats.entityTiles = Object.keys(shown).sort();
          stats.ms = stats.ms || {};
          stats.ms.entities = Math.round(performance.now() - stats.started);
          container.setAttribute("data-entity-band", String(band.index));
        });
      }
      entityDone = load(cfg.base + "entities.index.json").then(function (d) {
        entityIndex = d;
        map.on("moveend", function () { refreshEntities().catch(fail); });
        return refreshEntities();
      });
    }

    // -- open incidents ---------------------------------------------------------------------
    var incidentDone = Promise.resolve();
    if (cfg.incidents) {
      var incidents = L.featureGroup();
      groups.incidents = incidents;
      overlays[swatch(cfg.incidents.legend) + esc(cfg.incidents.title)] = incidents;
      if (cfg.incidents.on) { incidents.addTo(map); }
      incidentDone = cfg.incidents.file ? load(cfg.base + cfg.incidents.file).then(function (d) {
        var late = d.overdue || [], deadline = d.deadline || [], lates = 0;
        for (var i = 0; i < d.count; i++) {
          var color = own(cfg.incidents.statusColors, d.status[i]) || cfg.incidents.statusColors[""];
          var isLate = late[i] === "1";
          lates += isLate ? 1 : 0;
          // Above the entity markers (which the cluster adds later, in chunks).
          var m = L.marker([d.y[i], d.x[i]], { keyboard: false, zIndexOffset: 1000, icon: L.divIcon({
            className: isLate ? "gm-inc gm-inc-late" : "gm-inc", iconSize: isLate ? [20, 20] : [14, 14],
            html: "<span style=\"background:" + esc(color) + "\"></span>" }) });
          var tip = "<b>" + esc(d.category_zh[i]) + "</b> · " + esc(d.status_zh[i]) +
            (isLate ? " · <span class=\"gm-late\">" + esc(cfg.labels.overdue) + "</span>" : "") +
            "<br>" + esc(d.reported_at[i]);
          m.bindTooltip(tip, { direction: "top", offset: [0, -6], className: "gm-tip" });
          m.bindPopup(incidentHtml(d, i, isLate, deadline[i], m.getLatLng()),
                      { maxWidth: 360, className: "gm-popup" });
          incidents.addLayer(m);
        }
        stats.drawn.incidents = d.count;
        stats.overdue = lates;
      }) : Promise.resolve();
      incidents.on("click", function (e) { routeAt(e.layer.getLatLng()); });
    }

    function incidentHtml(d, i, isLate, deadline, latlng) {
      var when = function (t) { return t ? esc(t) + esc(cfg.labels.beijing) : ""; };
      var rows = [
        [cfg.labels.category, esc(d.category_zh[i])], [cfg.labels.status, esc(d.status_zh[i])],
        [cfg.labels.reportedAt, when(d.reported_at[i])]];
      if (deadline || isLate) {
        rows.push([cfg.labels.deadline, when(deadline) + (isLate ?
          " <span class=\"gm-late\">" + esc(cfg.labels.overdue) + "</span>" : "")]);
      }
      rows.push([cfg.labels.source, esc(d.source[i])], [cfg.labels.grid, esc(d.grid[i])],
                [cfg.labels.description, esc(d.description[i])]);
      var link = "";
      if (cfg.incidents.casePage && d.id[i]) {
        link = "<a class=\"gm-case-link\" href=\"" + esc(caseUrl(d.id[i])) + "\" target=\"_blank\"" +
          " rel=\"noopener\" data-case=\"" + esc(d.id[i]) + "\" title=\"" + esc(cfg.labels.openCaseHelp) +
          "\">" + esc(cfg.labels.openCase) + " " + esc(d.id[i]) + "</a>";
      }
      return "<b>" + esc(cfg.labels.incident) + " " + esc(d.id[i]) + "</b>" +
        "<table class=\"gm-table\">" + rows.map(function (r) {
          return "<tr><th>" + esc(r[0]) + "</th><td>" + r[1] + "</td></tr>";
        }).join("") + "</table>" + actions(latlng, link);
    }

    // The case page, as a URL of the page around the map (same origin: the app's).
    function caseUrl(id) {
      var base = document.baseURI;
      try { base = window.top.location.href; } catch (err) { /* another origin: keep ours */ }
      return new URL(cfg.incidents.casePage + "?case=" + encodeURIComponent(id), base).href;
    }

    // A popup's actions: route its position, and what else is given (the case link).
    function actions(latlng, extra) {
      var route = "";
      if (cfg.clicks && latlng) {
        route = "<button type=\"button\" class=\"gm-route-here\" data-lat=\"" + Number(latlng.lat).toFixed(7) +
          "\" data-lng=\"" + Number(latlng.lng).toFixed(7) + "\" title=\"" + esc(cfg.labels.routeHereHelp) +
          "\">" + esc(cfg.labels.routeHere) + "</button>";
      }
      return route || extra ? "<div class=\"gm-actions\">" + route + (extra || "") + "</div>" : "";
    }

    // A click on a marker, a cluster or a popup's button: a map click there (clicks()).
    function routeAt(latlng) {
      if (!cfg.clicks || !latlng) { return; }
      map.fire("click", { latlng: L.latLng(latlng.lat, latlng.lng) });
    }

    // The popups' buttons and links (their content is replaced when details arrive, so the
    // map container listens for them).
    container.addEventListener("click", function (ev) {
      var el = ev.target && ev.target.closest ? ev.target.closest(".gm-route-here, .gm-case-link") : null;
      if (!el || !container.contains(el)) { return; }
      if (el.classList.contains("gm-route-here")) {
        ev.preventDefault();
        routeAt({ lat: parseFloat(el.getAttribute("data-lat")), lng: parseFloat(el.getAttribute("data-lng")) });
        stats.routedFromPopup = (stats.routedFromPopup || 0) + 1;
      } else if (ev.button === 0 && !ev.ctrlKey && !ev.metaKey && !ev.shiftKey && !ev.altKey &&
                 openCase(el.getAttribute("data-case"))) {
        ev.preventDefault();
      }
    });

    if (cfg.clicks) { clicks(map); }
    L.control.layers(null, overlays, { collapsed: cfg.collapsedControl, position: "topright" }).addTo(map);
    legend(map, cfg);

    var polygonsDone = showLevel(levelFor(map.getZoom()));
    map.on("zoomend", function () {
      showLevel(levelFor(map.getZoom())).catch(fail);
    });
    map.on("moveend", function () {
      cfg.layers.forEach(function (spec) { layerTiles(spec).catch(fail); });
    });
    Promise.all([polygonsDone, entityDone, incidentDone]).then(function () {
      return new Promise(function (painted) { requestAnimationFrame(function () { painted(); }); });
    }).then(function () {
      // Ready = the frame with every layer has been handed to the screen.
      stats.readyMs = performance.now() - stats.started;
      stats.readyAt = performance.now();
      container.setAttribute("data-gridmap", "ready");
      // The grid workers are needed at the first grid tooltip: fetch them once the map is up.
      setTimeout(loadWorkers, 400);
    }).catch(fail);
  }

  /* A click routes. streamlit-folium reports a map click 250 ms late (its updates are
   * debounced for panning); with returned_objects=["last_clicked"] the value it would send is
   * {last_clicked: latlng}: send that at once, and record it as sent so the debounced update
   * does not repeat it. The click gets a number (n, in the same LatLng object streamlit-folium
   * keeps), so the same place clicked twice is two clicks (ui/page.py last_click). A marker,
   * cluster or popup button fires a map click too (routeAt), so every path is this one.
   * Without the component's globals (another version) its own path still works. */
  var clickSeq = Date.now();
  function clicks(map) {
    map.on("click", function (e) {
      e.latlng.n = ++clickSeq;
      var g = window.__GLOBAL_DATA__, st = window.Streamlit;
      if (!g || !st || !st.setComponentValue) { return; }
      var data = { last_clicked: e.latlng };
      g.lat_lng_clicked = e.latlng;
      g.previous_data = data;
      st.setComponentValue(data);
    });
  }

  /* An incident popup's case link, clicked: send {open_case: {id, n}} with the map's value;
   * the page (ui/page.py follow_case_link) switches to the case page with the case selected.
   * The value streamlit-folium keeps as sent stays without it, so a later click or pan does
   * not repeat it. False when there is no component to tell (the link then opens a tab). */
  function openCase(id) {
    var g = window.__GLOBAL_DATA__, st = window.Streamlit;
    if (!id || !g || !st || !st.setComponentValue) { return false; }
    st.setComponentValue(assign({}, g.previous_data || {}, { open_case: { id: id, n: ++clickSeq } }));
    return true;
  }

  var SHAPES = { dot: "gm-sw gm-sw-dot", diamond: "gm-sw gm-sw-diamond",
    "diamond-late": "gm-sw gm-sw-diamond gm-sw-late", cluster: "gm-sw gm-sw-cluster" };
  function swatch(s) {
    if (!s) { return ""; }
    var style = "border:" + (s.weight || 2) + "px " + (s.dash ? "dashed" : "solid") + " " + esc(s.color) + ";" +
      "background:" + esc(s.fill || "transparent") + ";";
    var cls = own(SHAPES, s.shape || "") || "gm-sw";
    return "<i class=\"" + cls + "\" style=\"" + style + "\"></i>";
  }

  function legend(map, cfg) {
    var control = L.control({ position: "bottomleft" });
    control.onAdd = function () {
      var div = L.DomUtil.create("div", "gm-legend");
      div.innerHTML = "<div class=\"gm-legend-title\" title=\"" + esc(cfg.labels.legendToggle) + "\">" +
        esc(cfg.labels.legend) + " <span>▾</span></div><div class=\"gm-legend-body\">" +
        cfg.legend.map(function (item) {
          return "<div>" + swatch(item) + esc(item.label) + "</div>";
        }).join("") +
        (cfg.gridMinZoom ? "<div class=\"gm-legend-hint gm-grid-hint\">" + esc(cfg.labels.gridHint) + "</div>" : "") +
        (cfg.clicks ? "<div class=\"gm-legend-hint\">" + esc(cfg.labels.clickHint) + "</div>" : "") +
        "</div>";
      // "Zoom in to see the grids": said while they are too small to be drawn.
      var hint = div.querySelector(".gm-grid-hint");
      if (hint) {
        var showHint = function () { hint.style.display = map.getZoom() < cfg.gridMinZoom ? "" : "none"; };
        map.on("zoomend", showHint);
        showHint();
      }
      // Open, it scrolls rather than cover the map's height.
      div.lastChild.style.maxHeight = Math.max(120, map.getSize().y - 140) + "px";
      div.firstChild.addEventListener("click", function () {
        div.classList.toggle("gm-legend-closed");
      });
      // On a narrow map the open legend would hide part of the city: start it folded.
      if (map.getSize().x < cfg.legendOpenMinWidth) { div.classList.add("gm-legend-closed"); }
      L.DomEvent.disableClickPropagation(div);
      L.DomEvent.disableScrollPropagation(div);
      return div;
    };
    control.addTo(map);
  }

  window.gridmap = { mount: mount, boot: boot, loadScripts: loadScripts, esc: esc };
})();
