/* gridmap phone map: the grid worker's compact map (pages/1_网格员.py, ui/worker.phone_map).
 *
 * A Streamlit components-v2 module drawn in the page itself, not in an iframe: on a phone the
 * streamlit-folium iframe cost a page of its own (fetched each visit), a React app inside it, a
 * 117 kB script of folium's markers sent through the websocket, and Leaflet, jQuery and the
 * gesture plugin loaded one after another. Here the data is JSON (ui/worker.phone_map_data),
 * Leaflet and leaflet-gesture-handling are the vendored files (static/vendor, immutable, loaded
 * in parallel and run in order, once per page), and every text from the data is set as text
 * (textContent), never as HTML. When the map is drawn its container gets data-gridmap="ready"
 * (tests and bench/bench_phone.py wait for it) and `.gridmapMap` (the Leaflet map, for tests).
 */

const loading = new Map();

function load(url) {
  if (!loading.has(url)) {
    loading.set(url, new Promise((resolve, reject) => {
      const css = url.endsWith(".css");
      const el = document.createElement(css ? "link" : "script");
      if (css) {
        el.rel = "stylesheet";
        el.href = url;
      } else {
        el.src = url;
        el.async = false; // fetched in parallel, run in the order added (Leaflet first)
      }
      el.onload = () => resolve();
      el.onerror = () => reject(new Error("地图文件加载失败：" + url));
      document.head.appendChild(el);
    }));
  }
  return loading.get(url);
}

function textNode(text) {
  const el = document.createElement("div");
  el.style.whiteSpace = "pre-line";
  el.textContent = text;
  return el;
}

function markers(L, rows, style, colour) {
  const group = L.featureGroup();
  for (const [lat, lon, fill, text] of rows) {
    L.circleMarker([lat, lon], { ...style, fillColor: colour(fill) })
      .bindTooltip(() => textNode(text))
      .bindPopup(() => textNode(text), { maxWidth: style.popupWidth })
      .addTo(group);
  }
  return group;
}

function draw(box, d) {
  const L = window.L;
  const map = L.map(box, {
    minZoom: d.minZoom, maxZoom: d.maxZoom,
    preferCanvas: true, // one canvas for the markers, not an SVG element each
    gestureHandling: true, gestureHandlingOptions: { text: d.gestureText, duration: 1200 },
    zoomControl: false, // added below with Chinese titles (Leaflet's say "Zoom in")
  });
  L.control.zoom({ zoomInTitle: "放大", zoomOutTitle: "缩小" }).addTo(map);
  // Credited as text: its link (English title, a site the intranet cannot reach) left out.
  map.attributionControl.setPrefix("Leaflet");
  for (const t of d.tiles) {
    L.tileLayer(t.url, {
      attribution: t.attr, subdomains: t.subdomains, maxNativeZoom: t.maxNativeZoom,
      maxZoom: d.maxZoom,
    }).addTo(map);
  }
  L.control.scale({ metric: true, imperial: false, maxWidth: 120, position: "bottomleft" })
    .addTo(map);
  L.geoJSON(d.units, { style: () => d.unitStyle, interactive: false }).addTo(map);
  const ents = markers(L, d.entities, d.entityStyle, (v) => (v ? d.visitedFill : d.unvisitedFill))
    .addTo(map);
  const cases = markers(L, d.cases, d.caseStyle, (c) => c).addTo(map);
  const layers = L.control.layers(null, { [d.labels.entities]: ents, [d.labels.cases]: cases },
    { collapsed: true }).addTo(map);
  const toggle = layers.getContainer().querySelector(".leaflet-control-layers-toggle");
  if (toggle) toggle.title = "图层";
  map.fitBounds(d.bounds, { padding: [12, 12] });
  box.gridmapMap = map;
  box.dataset.gridmap = "ready";
  return map;
}

const mounted = new WeakMap();

export default function (component) {
  const { parentElement, data } = component;
  let state = mounted.get(parentElement);
  if (!state) {
    const box = document.createElement("div");
    box.className = "gm-phone-map";
    parentElement.appendChild(box);
    state = { box, map: null, sig: "", gone: false };
    state.cleanup = () => { // when Streamlit unmounts the element
      state.gone = true;
      if (state.map) state.map.remove();
      mounted.delete(parentElement);
    };
    mounted.set(parentElement, state);
  }
  const sig = JSON.stringify(data || null);
  if (!data || state.sig === sig) return state.cleanup; // nothing new (a rerun)
  state.sig = sig;
  state.box.style.height = data.height + "px";
  Promise.all(data.assets.map(load)).then(() => {
    if (state.gone || state.sig !== sig) return; // unmounted, or newer data came meanwhile
    if (state.map) state.map.remove();
    delete state.box.dataset.gridmap;
    state.map = draw(state.box, data);
  }).catch((err) => {
    state.box.dataset.gridmap = "error";
    state.box.textContent = String(err.message || err);
  });
  return state.cleanup;
}
