/* firespotter ground view: the live fleet map served by `firespotter listen --http`.
 *
 * Data: one Server-Sent Events stream (`events`): `snapshot` (everything, on every (re)connect), `drone` (one
 * drone's record after each message), `fires` (the fire map as nested age bands), `tick` (server time and
 * counters, every 0.5 s). The time slider asks `api/fires?t=` for the fire map of a past moment.
 * Offline: no request leaves the server this page came from, unless a tile URL was configured.
 * Every update is applied inside a guard: a bad one is counted and logged as a warning, never breaks the page.
 * `window.groundview` exposes the page's state (tests, debugging).
 */
(function () {
  "use strict";

  var gv = window.groundview = {
    ready: false, connected: false, snapshots: 0, events: 0, clientErrors: [], mode: "live", viewT: null,
    drones: {}, fires: [], bands: 0, config: null
  };
  var config = null;
  var clockOffset = 0;  // server time - local time, seconds
  var counters = {};
  var tracks = {};      // id -> [[t, lon, lat, yaw], ...]
  var thumbs = {};      // id -> thumbnail record
  var layers = {};      // id -> {marker, footprint, track}
  var cards = {};       // id -> <li>
  var liveFires = null; // the latest live fire map
  var autoFit = true;
  var fitted = false;

  function guard(what, fn) {
    try { fn(); } catch (e) {
      gv.clientErrors.push(what + ": " + (e && e.message ? e.message : String(e)));
      if (gv.clientErrors.length > 50) gv.clientErrors.shift();
      console.warn("groundview: ignored a bad " + what + " update:", e);
    }
  }
  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function num(x) { return (typeof x === "number" && isFinite(x)) ? x : null; }
  function serverNow() { return Date.now() / 1000 + clockOffset; }
  function fmtAge(s) {
    if (s === null || !isFinite(s)) return "?";
    s = Math.max(0, s);
    if (s < 10) return s.toFixed(1) + " s";
    if (s < 59.5) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    return Math.floor(s / 3600) + " h " + String(Math.round((s % 3600) / 60)).padStart(2, "0");
  }
  function fmtArea(m2) {
    if (num(m2) === null) return null;
    if (m2 >= 10000) return (m2 / 10000).toFixed(m2 >= 1e6 ? 0 : 2) + " ha";
    return Math.round(m2).toLocaleString("en-US").replace(/,/g, "\u202f") + " m²";
  }
  function fmtTime(t) {
    var d = new Date(t * 1000);
    return d.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false});
  }
  function fmtUTC(t) { return new Date(t * 1000).toISOString().slice(11, 19) + " UTC"; }
  function fmtLatLon(lat, lon) {
    return Math.abs(lat).toFixed(5) + (lat >= 0 ? " N, " : " S, ") + Math.abs(lon).toFixed(5) + (lon >= 0 ? " E" : " W");
  }
  function stateOf(d) { return d.lost ? "lost" : (d.state && d.state !== "?" ? d.state : "unknown"); }
  function stateLabel(d) {
    if (d.lost) return "LOST";
    return (d.state && d.state !== "?" ? d.state : "unknown").toUpperCase();
  }
  function badge(d) { var s = stateOf(d); var b = el("span", "badge s-" + s.replace(/[^a-z]/g, ""), stateLabel(d)); return b; }
  function validRing(ring) {
    if (!Array.isArray(ring) || ring.length < 3) return false;
    for (var i = 0; i < ring.length; i++) {
      var p = ring[i];
      if (!Array.isArray(p) || num(p[0]) === null || num(p[1]) === null || Math.abs(p[1]) > 90 || Math.abs(p[0]) > 180) return false;
    }
    return true;
  }
  function latlngs(ring) { return ring.map(function (p) { return [p[1], p[0]]; }); }

  // --- the map ----------------------------------------------------------------------------------------------

  var map = L.map("map", {zoomSnap: 0.25, zoomDelta: 0.5, maxZoom: 22, minZoom: 2, worldCopyJump: false});
  map.attributionControl.setPrefix("Leaflet");
  [["grid", 250], ["footprints", 380], ["fires", 410], ["tracks", 420]].forEach(function (p) {
    var pane = map.createPane(p[0]);
    pane.style.zIndex = p[1];
    if (p[0] === "grid" || p[0] === "footprints" || p[0] === "tracks") pane.style.pointerEvents = "none";
  });
  map.setView([20, 0], 2);
  ["mousedown", "wheel", "touchstart", "dblclick", "keydown"].forEach(function (ev) {
    map.getContainer().addEventListener(ev, function () { autoFit = false; }, {passive: true});
  });

  // An offline background: a metric grid (lines every 1/2/5 x 10^n metres, every fifth one bold) in a canvas.
  var Grid = L.Layer.extend({
    onAdd: function (m) {
      this._canvas = L.DomUtil.create("canvas", "gv-grid leaflet-zoom-hide", m.getPane("grid"));
      m.on("move resize zoomend viewreset", this._draw, this);
      this._draw();
    },
    onRemove: function (m) { m.off("move resize zoomend viewreset", this._draw, this); L.DomUtil.remove(this._canvas); },
    setOrigin: function (lat, lon) { this.origin = [lat, lon]; if (this._map) this._draw(); },
    _draw: function () {
      var m = this._map, size = m.getSize(), dpr = window.devicePixelRatio || 1, c = this._canvas;
      if (!size.x || !size.y) return;
      var w = Math.round(size.x * dpr), h = Math.round(size.y * dpr);
      if (c.width !== w || c.height !== h) { c.width = w; c.height = h; c.style.width = size.x + "px"; c.style.height = size.y + "px"; }
      L.DomUtil.setPosition(c, m.containerPointToLayerPoint([0, 0]));
      var ctx = c.getContext("2d");
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, size.x, size.y);
      var center = m.getCenter(), o = this.origin || [0, 0];
      var mpp = 40075016.686 * Math.cos(center.lat * Math.PI / 180) / (256 * Math.pow(2, m.getZoom()));
      var target = mpp * 80, p10 = Math.pow(10, Math.floor(Math.log10(target))), step = p10 * 10;
      [1, 2, 5, 10].some(function (k) { if (k * p10 >= target) { step = k * p10; return true; } return false; });
      this.step = step;
      var cosO = Math.max(0.01, Math.cos(o[0] * Math.PI / 180));
      var dLat = step / 111320, dLon = step / (111320 * cosO), b = m.getBounds();
      var k0 = Math.floor((b.getSouth() - o[0]) / dLat), k1 = Math.ceil((b.getNorth() - o[0]) / dLat);
      var j0 = Math.floor((b.getWest() - o[1]) / dLon), j1 = Math.ceil((b.getEast() - o[1]) / dLon);
      if (k1 - k0 > 300 || j1 - j0 > 300) return;
      var k, j, y, x;
      for (var pass = 0; pass < 2; pass++) {  // minor lines, then major ones over them
        ctx.beginPath();
        ctx.strokeStyle = pass ? "rgba(70, 80, 90, .42)" : "rgba(70, 80, 90, .16)";
        ctx.lineWidth = pass ? 1.2 : 1;
        for (k = k0; k <= k1; k++) {
          if ((k % 5 === 0) !== !!pass) continue;
          y = Math.round(m.latLngToContainerPoint([o[0] + k * dLat, center.lng]).y) + 0.5;
          ctx.moveTo(0, y); ctx.lineTo(size.x, y);
        }
        for (j = j0; j <= j1; j++) {
          if ((j % 5 === 0) !== !!pass) continue;
          x = Math.round(m.latLngToContainerPoint([center.lat, o[1] + j * dLon]).x) + 0.5;
          ctx.moveTo(x, 0); ctx.lineTo(x, size.y);
        }
        ctx.stroke();
      }
      if (gridLabel) gridLabel.textContent = "grid " + fmtDist(step) + " (bold " + fmtDist(step * 5) + ")";
    }
  });
  function fmtDist(m) { return m >= 1000 ? (m / 1000) + " km" : m + " m"; }

  var gridLabel = null;
  var grid = new Grid();
  var tileLayer = null;

  function control(position, cls, build) {
    var C = L.Control.extend({
      options: {position: position},
      onAdd: function () { var d = L.DomUtil.create("div", "gv-box " + cls); L.DomEvent.disableClickPropagation(d); build(d); return d; }
    });
    var c = new C(); c.addTo(map); return c;
  }
  L.control.scale({metric: true, imperial: false, maxWidth: 160, position: "bottomleft"}).addTo(map);
  var legendBox = null, cursorBox = null, bannerBox = null;
  control("bottomleft", "gv-legend", function (d) { legendBox = d; });
  control("bottomright", "gv-cursor", function (d) { cursorBox = d; d.textContent = "—"; });
  control("topright", "gv-banner-wrap", function (d) { bannerBox = d; d.className = "gv-banner"; d.hidden = true; });
  map.on("mousemove", function (e) { cursorBox.textContent = fmtLatLon(e.latlng.lat, e.latlng.lng); });

  function buildLegend() {
    legendBox.textContent = "";
    legendBox.appendChild(el("div", "ttl", "Fire, last seen"));
    var edges = config.edges_s || [], colours = config.band_colours || [];
    edges.forEach(function (e, i) {
      var r = el("div", "row"), sw = el("span", "sw");
      sw.style.background = colours[i];
      r.appendChild(sw);
      r.appendChild(document.createTextNode((i === 0 ? "< " : (fmtAge(edges[i - 1]) + " – ")) + fmtAge(e) + " ago"));
      legendBox.appendChild(r);
    });
    var fp = el("div", "row"), s2 = el("span", "sw fp");
    fp.appendChild(s2); fp.appendChild(document.createTextNode("camera footprint, ▲ heading"));
    legendBox.appendChild(fp);
    gridLabel = el("div", "row muted", "");
    if (!tileLayer) legendBox.appendChild(gridLabel);
    grid._map && grid._draw();
  }

  function setupBackground() {
    if (tileLayer) { map.removeLayer(tileLayer); tileLayer = null; }
    var t = config.tiles;
    if (t && t.url) {
      tileLayer = L.tileLayer(t.url, {attribution: t.attribution || "", minZoom: 2, maxZoom: 22,
        minNativeZoom: t.minZoom || 0, maxNativeZoom: t.maxNativeZoom || 19});
      tileLayer.addTo(map);
    }
    if (!map.hasLayer(grid)) grid.addTo(map);  // over tiles too, faintly: distances at a glance
  }

  // --- fires ------------------------------------------------------------------------------------------------

  var fireGroup = L.layerGroup().addTo(map);

  function firePopup(p) {
    var d = el("div", "gv-popup");
    var area = fmtArea(p.area_m2);
    d.appendChild(el("b", null, "Fire" + (area ? " · " + area : "")));
    d.appendChild(el("div", null, "seen by " + ((p.drones || []).join(", ") || "?")));
    var last = p.last_seen ? Date.parse(p.last_seen) / 1000 : null, first = p.first_seen ? Date.parse(p.first_seen) / 1000 : null;
    if (first) d.appendChild(el("div", null, "first " + fmtTime(first) + " (" + fmtUTC(first) + ")"));
    if (last) d.appendChild(el("div", null, "last " + fmtTime(last) + ", " + fmtAge(serverNow() - last) + " ago"));
    d.appendChild(el("div", null, (p.detections || 0) + " detections"));
    (p.drones || []).forEach(function (id) {   // the latest alert snapshot of each drone that saw it
      var img = snapshotImg(thumbs[id], "gv-snap");
      if (img) { img.setAttribute("data-drone-id", id); img.title = "latest snapshot from " + id; d.appendChild(img); }
    });
    return d;
  }

  function drawFires(f) {
    fireGroup.clearLayers();
    var bands = Array.isArray(f && f.bands) ? f.bands : [];
    var outer = [];
    bands.forEach(function (band, i) {   // oldest (widest) first: newer bands on top
      var colour = typeof band.colour === "string" && /^#[0-9a-fA-F]{6}$/.test(band.colour) ? band.colour : "#d7191c";
      var isOuter = i === 0;
      (Array.isArray(band.features) ? band.features : []).forEach(function (ft) {
        guard("fire polygon", function () {
          var g = ft && ft.geometry;
          if (!g || g.type !== "Polygon" || !Array.isArray(g.coordinates) || !validRing(g.coordinates[0])) return;
          var rings = g.coordinates.filter(validRing).map(latlngs);
          var poly = L.polygon(rings, {
            pane: "fires", color: isOuter ? "#7f0000" : colour, weight: isOuter ? 2.5 : 1, opacity: isOuter ? 0.95 : 0.8,
            fillColor: colour, fillOpacity: isOuter ? 0.45 : 0.6, interactive: isOuter,
            className: "gv-fire gv-band-" + Math.round(band.edge_s || 0)
          });
          if (isOuter) {
            poly.bindPopup(function () { return firePopup(ft.properties || {}); });
            outer.push({drones: (ft.properties || {}).drones || [], area_m2: (ft.properties || {}).area_m2,
                        last_seen: (ft.properties || {}).last_seen, bounds: poly.getBounds()});
          }
          poly.addTo(fireGroup);
        });
      });
    });
    gv.fires = outer.map(function (o) { return {drones: o.drones, area_m2: o.area_m2, last_seen: o.last_seen}; });
    gv.bands = bands.length;
    gv.fireBounds = outer.map(function (o) { return o.bounds; });
  }

  // --- drones -----------------------------------------------------------------------------------------------

  function droneIcon(d, past) {
    var wrap = el("div", "gv-drone" + (d.lost ? " lost" : "") + (past ? " past" : ""));
    wrap.setAttribute("data-drone-id", d.id);
    var yaw = d.pose && num(d.pose.yaw_deg) !== null ? d.pose.yaw_deg : null;
    var svgNS = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(svgNS, "svg");
    svg.setAttribute("width", "36"); svg.setAttribute("height", "36"); svg.setAttribute("viewBox", "-18 -18 36 36");
    var g = document.createElementNS(svgNS, "g");
    var path = document.createElementNS(svgNS, "path");
    if (yaw === null) { path.setAttribute("d", "M0,-9 A9,9 0 1,1 -0.01,-9 Z"); }
    else { path.setAttribute("d", "M0,-15 L10,12 L0,6 L-10,12 Z"); g.setAttribute("transform", "rotate(" + yaw.toFixed(1) + ")"); }
    g.appendChild(path); svg.appendChild(g); wrap.appendChild(svg);
    var label = el("div", "gv-label");
    label.appendChild(el("span", "gv-id", d.id));
    if (past) label.appendChild(el("span", null, "at " + fmtTime(past)));
    else label.appendChild(badge(d));
    wrap.appendChild(label);
    return L.divIcon({html: wrap, className: "gv-drone-icon", iconSize: [36, 36], iconAnchor: [18, 18]});
  }

  function drawDrone(id) {
    var d = gv.drones[id];
    if (!d) return;
    var ly = layers[id] || (layers[id] = {});
    var pos = null, past = null;
    if (gv.mode === "live") {
      if (d.pose && num(d.pose.lat) !== null && num(d.pose.lon) !== null) pos = [d.pose.lat, d.pose.lon];
    } else {
      var tr = tracks[id] || [];
      for (var i = tr.length - 1; i >= 0; i--) { if (tr[i][0] <= gv.viewT) { pos = [tr[i][2], tr[i][1]]; past = tr[i][0]; break; } }
    }
    if (pos) {
      var pd = past ? {id: d.id, pose: {yaw_deg: tracks[id].filter(function (p) { return p[0] === past; })[0][3]}} : d;
      if (!ly.marker) {
        ly.marker = L.marker(pos, {icon: droneIcon(pd, past), keyboard: false, zIndexOffset: 1000}).addTo(map);
        ly.marker.on("click", function () { var c = cards[id]; if (c) c.scrollIntoView({block: "nearest"}); });
      } else { ly.marker.setLatLng(pos); ly.marker.setIcon(droneIcon(pd, past)); }
    } else if (ly.marker) { map.removeLayer(ly.marker); ly.marker = null; }

    var fp = gv.mode === "live" && !d.lost && Array.isArray(d.footprint) && validRing(d.footprint) ? d.footprint : null;
    if (fp) {
      if (!ly.footprint) {
        ly.footprint = L.polygon(latlngs(fp), {pane: "footprints", color: "#1565c0", weight: 1.5, dashArray: "6 4",
          fillColor: "#1565c0", fillOpacity: 0.07, interactive: false, className: "gv-footprint"}).addTo(map);
      } else ly.footprint.setLatLngs(latlngs(fp));
    } else if (ly.footprint) { map.removeLayer(ly.footprint); ly.footprint = null; }

    var tr2 = (tracks[id] || []).filter(function (p) { return gv.mode === "live" || p[0] <= gv.viewT; });
    if (tr2.length >= 2) {
      var ll = tr2.map(function (p) { return [p[2], p[1]]; });
      if (!ly.track) ly.track = L.polyline(ll, {pane: "tracks", color: "#0d47a1", weight: 2, opacity: 0.45, interactive: false,
                                               className: "gv-track"}).addTo(map);
      else ly.track.setLatLngs(ll);
    } else if (ly.track) { map.removeLayer(ly.track); ly.track = null; }
  }

  function snapshotImg(th, cls) {
    if (!th || typeof th.snapshot !== "string" || !/^data:image\/jpeg;base64,[A-Za-z0-9+\/=]+$/.test(th.snapshot)) return null;
    var img = el("img", cls);
    img.alt = "alert snapshot, frame " + th.seq;
    img.src = th.snapshot;
    return img;
  }

  function drawThumb(canvas, th) {
    var ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height;
    ctx.globalCompositeOperation = "source-over";
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, W, H);
    if (!th) { caption(ctx, W, H, "no fire message yet"); return; }
    var fw = num(th.frame && th.frame[0]) || 1, fh = num(th.frame && th.frame[1]) || 1;
    var s = Math.min(W / fw, H / fh), dw = fw * s, dh = fh * s, ox = (W - dw) / 2, oy = (H - dh) / 2;
    function outlines() {
      ctx.globalCompositeOperation = "source-over";
      ctx.strokeStyle = "#ffeb3b"; ctx.lineWidth = 1;
      (th.regions || []).forEach(function (poly) {
        if (!Array.isArray(poly) || poly.length < 2) return;
        ctx.beginPath();
        poly.forEach(function (p, i) {
          var x = ox + (num(p[0]) || 0) * s, y = oy + (num(p[1]) || 0) * s;
          if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
        });
        ctx.closePath(); ctx.stroke();
      });
      ctx.strokeStyle = "#444"; ctx.strokeRect(ox + 0.5, oy + 0.5, dw - 1, dh - 1);
      if (!th.src && th.note) caption(ctx, W, H, th.note);
      else if (!(th.regions || []).length) caption(ctx, W, H, "no fire");
    }
    if (th.src && /^data:image\/png;base64,[A-Za-z0-9+\/=]+$/.test(th.src)) {
      var img = new Image();
      img.onload = function () {
        guard("thumbnail", function () {
          ctx.imageSmoothingEnabled = false;
          ctx.drawImage(img, ox, oy, dw, dh);
          ctx.globalCompositeOperation = "multiply";   // white fire pixels -> orange, black stays black
          ctx.fillStyle = "#ff5722"; ctx.fillRect(ox, oy, dw, dh);
          outlines();
        });
      };
      img.onerror = function () { outlines(); caption(ctx, W, H, "mask unreadable"); };
      img.src = th.src;
    } else outlines();
  }
  function caption(ctx, W, H, text) {
    ctx.globalCompositeOperation = "source-over";
    ctx.fillStyle = "rgba(0,0,0,.6)"; ctx.fillRect(0, H - 15, W, 15);
    ctx.fillStyle = "#ccc"; ctx.font = "10px system-ui, sans-serif"; ctx.textAlign = "center";
    ctx.fillText(String(text).slice(0, 40), W / 2, H - 4);
  }

  function card(id) {
    if (cards[id]) return cards[id];
    var li = el("li", "drone");
    li.setAttribute("data-drone-id", id);
    var cv = el("canvas", "thumb"); cv.width = 112; cv.height = 84;
    var info = el("div", "info");
    var row1 = el("div", "row1"), name = el("span", "name", id);
    row1.appendChild(name); row1.appendChild(el("span", "badge"));
    info.appendChild(row1);
    ["alertline", "line l-rates", "line l-pos", "small l-seen"].forEach(function (c) { info.appendChild(el("div", c)); });
    li.appendChild(cv); li.appendChild(info);
    li.addEventListener("click", function () {
      var d = gv.drones[id];
      if (d && d.pose && num(d.pose.lat) !== null) { autoFit = false; map.flyTo([d.pose.lat, d.pose.lon], Math.max(map.getZoom(), 16), {duration: 0.6}); }
    });
    var list = $("drones"), ids = Object.keys(cards).concat([id]).sort(), at = ids.indexOf(id);
    cards[id] = li;
    list.insertBefore(li, ids[at + 1] ? cards[ids[at + 1]] : null);
    $("nodrones").hidden = true;
    drawThumb(cv, thumbs[id]);
    showSnapshot(li, thumbs[id]);
    return li;
  }

  function showSnapshot(li, th) {   // the card's alert snapshot: the picture behind the latest fire message
    var old = li.querySelector("img.snap"), img = snapshotImg(th, "snap");
    if (old) old.remove();
    if (img) li.querySelector(".info").appendChild(img);
  }

  function updateCard(id) {
    var d = gv.drones[id], li = card(id);
    li.setAttribute("data-state", d.state || "?");
    li.setAttribute("data-lost", d.lost ? "true" : "false");
    li.className = "drone" + (d.lost ? " lost" : "") + " alert-" + (d.alert || "none");
    var old = li.querySelector(".row1 .badge"); old.replaceWith(badge(d));
    var a = li.querySelector(".alertline"), area = fmtArea(d.area_m2);
    a.className = "alertline " + (d.alert || "none");
    a.textContent = (d.lost ? "last report: " : "") + (d.alert === "fire" || d.alert === "suspect"
      ? (d.alert.toUpperCase() + " · " + d.regions + " region" + (d.regions === 1 ? "" : "s") + (area ? " · " + area : ""))
      : "no fire in view");
    var r = li.querySelector(".l-rates"); r.textContent = "";
    var ob = d.outbox && num(d.outbox.pending) !== null ? d.outbox.pending : null;
    [["fps ", num(d.fps) !== null ? d.fps.toFixed(1) : "–"], [" · outbox ", ob === null ? "–" : String(ob)],
     [" · link ", d.availability === "offline" ? "down" : (d.link ? (d.link.connected ? "up" : "down") : "–")]].forEach(function (kv) {
      r.appendChild(document.createTextNode(kv[0])); r.appendChild(el("b", null, kv[1]));
    });
    if (num(d.temperature_c) !== null) { r.appendChild(document.createTextNode(" · ")); r.appendChild(el("b", null, d.temperature_c.toFixed(0) + "\u00a0°C")); }
    var p = li.querySelector(".l-pos");
    if (d.pose && num(d.pose.lat) !== null) {
      var parts = [fmtLatLon(d.pose.lat, d.pose.lon)];
      if (num(d.pose.alt_agl_m) !== null) parts.push(Math.round(d.pose.alt_agl_m) + "\u00a0m\u00a0AGL");
      if (num(d.pose.yaw_deg) !== null) parts.push("hdg\u00a0" + String(Math.round(((d.pose.yaw_deg % 360) + 360) % 360)).padStart(3, "0") + "°");
      p.textContent = parts.join(" · ");
    } else p.textContent = "position unknown (no pose yet)";
    refreshSeen(id);
    if (d.link && d.link.error) li.title = "link: " + d.link.error; else li.removeAttribute("title");
  }

  function refreshSeen(id) {
    var d = gv.drones[id], li = cards[id];
    if (!d || !li) return;
    var s = li.querySelector(".l-seen"), now = serverNow();
    var txt = (d.lost ? (d.availability === "offline" ? "offline (last will or liveliness lost), silent for " : "silent for ") : "heard ")
      + fmtAge(now - d.last_seen) + (d.lost ? "" : " ago");
    if (num(d.pose_t) !== null) txt += " · position " + fmtAge(now - d.pose_t) + " old";
    if (d.model) txt += " · " + d.model;
    s.textContent = txt;
  }

  function applyDrone(d, thumb, point) {
    if (!d || typeof d.id !== "string") throw new Error("drone record without an id");
    var isNew = !gv.drones[d.id];
    gv.drones[d.id] = d;
    if (thumb) thumbs[d.id] = thumb;
    if (point && Array.isArray(point) && num(point[0]) !== null) {
      var tr = tracks[d.id] || (tracks[d.id] = []);
      var last = tr[tr.length - 1];
      if (last && Math.abs(last[0] - point[0]) < 1e-6) tr[tr.length - 1] = point;
      else if (!last || Math.hypot(last[1] - point[1], last[2] - point[2]) > 0 || point[0] - last[0] >= 30) tr.push(point);
      if (last && point[0] < last[0]) tr.sort(function (a, b) { return a[0] - b[0]; });
      if (tr.length > 2000) tr.splice(0, tr.length - 2000);
    }
    updateCard(d.id);
    if (thumb) { drawThumb(cards[d.id].querySelector("canvas"), thumb); showSnapshot(cards[d.id], thumb); }
    drawDrone(d.id);
    $("ndrones").textContent = "(" + Object.keys(gv.drones).length + ")";
    if (isNew || !fitted) maybeFit();
  }

  // --- fitting the view -------------------------------------------------------------------------------------

  function allBounds() {
    var b = null;
    function add(x) { if (!x || !x.isValid || !x.isValid()) return; b = b ? b.extend(x) : L.latLngBounds(x.getSouthWest(), x.getNorthEast()); }
    (gv.fireBounds || []).forEach(add);
    Object.keys(gv.drones).forEach(function (id) {
      var d = gv.drones[id];
      if (d.pose && num(d.pose.lat) !== null) add(L.latLngBounds([d.pose.lat, d.pose.lon], [d.pose.lat, d.pose.lon]));
      if (layers[id] && layers[id].footprint) add(layers[id].footprint.getBounds());
    });
    return b;
  }
  function maybeFit(force) {
    if (!force && !autoFit) return;
    var b = allBounds();
    if (!b) return;
    if (!force && fitted && map.getBounds().contains(b)) return;
    if (!grid.origin) { var c = b.getCenter(); grid.setOrigin(Math.round(c.lat * 100) / 100, Math.round(c.lng * 100) / 100); }
    map.fitBounds(b.pad(0.15), {maxZoom: 18, animate: fitted});
    fitted = true;
  }
  $("fit").addEventListener("click", function () { autoFit = true; maybeFit(true); });

  // --- the time slider --------------------------------------------------------------------------------------

  var slider = $("slider"), when = $("when"), fetchTimer = null, fetchSeq = 0;
  function setExportLinks() {
    var q = gv.mode === "live" ? "" : "?t=" + gv.viewT.toFixed(0);
    $("dl-geojson").href = "export/firemap.geojson" + q;
    $("dl-kml").href = "export/firemap.kml" + q;
  }
  function redrawAllDrones() { Object.keys(gv.drones).forEach(function (id) { guard("drone", function () { drawDrone(id); }); }); }
  function goLive() {
    gv.mode = "live"; gv.viewT = null; slider.value = "0";
    when.textContent = "LIVE"; when.className = "when live"; $("live").hidden = true; bannerBox.hidden = true;
    if (liveFires) drawFires(liveFires);
    redrawAllDrones(); setExportLinks();
  }
  function showPast(offset) {
    gv.mode = "past"; gv.viewT = serverNow() + offset;
    when.textContent = fmtTime(gv.viewT) + " (" + fmtAge(-offset) + " ago)"; when.className = "when past";
    $("live").hidden = false;
    bannerBox.hidden = false; bannerBox.textContent = "Showing the map at " + fmtTime(gv.viewT) + " — not live";
    redrawAllDrones(); setExportLinks();
    clearTimeout(fetchTimer);
    fetchTimer = setTimeout(function () {
      var seq = ++fetchSeq, t = gv.viewT;
      fetch("api/fires?t=" + t.toFixed(1), {credentials: "same-origin"}).then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      }).then(function (f) {
        if (seq === fetchSeq && gv.mode === "past") guard("fires", function () { drawFires(f); gv.pastFiresT = t; });
      }).catch(function (e) { console.warn("groundview: could not fetch the fire map at", t, e); });
    }, 200);
  }
  slider.addEventListener("input", function () { var v = Number(slider.value); if (v >= 0) goLive(); else showPast(v); });
  $("live").addEventListener("click", goLive);

  // --- the stream -------------------------------------------------------------------------------------------

  function onSnapshot(s) {
    config = gv.config = s.config || {};
    clockOffset = (num(s.now) || Date.now() / 1000) - Date.now() / 1000;
    $("station").textContent = config.station || "";
    document.title = "firespotter · " + (config.station || "ground station");
    slider.min = String(-Math.round(config.history_s || 3600));
    setupBackground(); buildLegend();
    tracks = {};
    Object.keys(s.tracks || {}).forEach(function (id) { tracks[id] = Array.isArray(s.tracks[id]) ? s.tracks[id] : []; });
    thumbs = s.thumbs || {};
    (s.drones || []).forEach(function (d) { guard("drone", function () { applyDrone(d, thumbs[d.id], null); }); });
    liveFires = s.fires;
    if (gv.mode === "live") drawFires(liveFires);
    onCounters(s.counters || {});
    gv.snapshots++;
    gv.ready = true;
    maybeFit();
  }
  function onCounters(c) {
    counters = c;
    var parts = [(c.drones || 0) + " drones", (c.fire_messages || 0) + " fire messages"];
    if (c.duplicates) parts.push(c.duplicates + " resent");
    $("counts").textContent = parts.join(" · ");
    var m = $("malformed");
    if (c.malformed) {
      m.hidden = false;
      m.textContent = c.malformed + " malformed message" + (c.malformed === 1 ? "" : "s") + " ignored" +
        (c.last_malformed ? " (last: " + String(c.last_malformed).slice(0, 160) + ")" : "");
    } else m.hidden = true;
    // the station's own link to the drones (broker or peers): shown while it is down
    var link = c.link || {}, l = $("link");
    if (link.where && !link.connected) {
      l.hidden = false;
      l.textContent = "Station not connected to " + String(link.where).slice(0, 120) +
        (link.error ? ": " + String(link.error).slice(0, 160) : "") + " (retrying)";
    } else l.hidden = true;
    gv.link = link;
    // Authentication: rejected messages per reason, or a standing note that the links are unauthenticated.
    var a = $("auth"), rej = c.rejected || {}, bits = [];
    Object.keys(rej).forEach(function (k) { if (rej[k]) bits.push(rej[k] + " " + k.replace("_", " ")); });
    if (c.authenticated === false) {
      a.hidden = false;
      a.textContent = "Links unauthenticated: no drone keys configured (docs/security.md).";
    } else if (bits.length) {
      a.hidden = false;
      a.textContent = "Rejected (authentication): " + bits.join(", ") + ".";
    } else a.hidden = true;
    gv.counters = c;
  }
  function setConn(on) {
    gv.connected = on;
    var c = $("conn");
    c.className = "conn " + (on ? "on" : "off");
    c.textContent = on ? "LIVE" : "RECONNECTING";
  }

  var es = null, retry = null;
  function connect() {
    if (es) es.close();
    es = new EventSource("events");
    es.onopen = function () { setConn(true); };
    es.onerror = function () {
      setConn(false);
      if (es.readyState === EventSource.CLOSED) { clearTimeout(retry); retry = setTimeout(connect, 3000); }
    };
    es.addEventListener("snapshot", function (ev) { gv.events++; guard("snapshot", function () { onSnapshot(JSON.parse(ev.data)); }); });
    es.addEventListener("drone", function (ev) {
      gv.events++;
      guard("drone", function () { var m = JSON.parse(ev.data); applyDrone(m.drone, m.thumb, m.track_point); });
    });
    es.addEventListener("fires", function (ev) {
      gv.events++;
      guard("fires", function () {
        liveFires = JSON.parse(ev.data);
        if (gv.mode === "live") { drawFires(liveFires); maybeFit(); }
      });
    });
    es.addEventListener("tick", function (ev) {
      guard("tick", function () {
        var t = JSON.parse(ev.data);
        if (num(t.now) !== null) clockOffset = t.now - Date.now() / 1000;
        onCounters(t.counters || {});
      });
    });
  }

  setInterval(function () {
    guard("clock", function () {
      var now = serverNow();
      $("clock").textContent = fmtTime(now);
      $("clock").title = fmtUTC(now);
      Object.keys(cards).forEach(refreshSeen);
    });
  }, 500);

  connect();
})();
