// anytime overlay page: one tile per camera, showing the live MJPEG picture and, drawn over it, the
// latest prediction from that camera's websocket (one message per tick). Plain ES2020, no dependencies.
//
// Test hooks: every tile has data-camera, data-state (camera state), data-ws (open|connecting|reconnecting)
// and data-updates (messages received); the overlay's parts carry data-testid (label, exit, confidence...).
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token");
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30000;
const CLOSE_REASONS = { 1013: "server full", 4401: "access token rejected", 4404: "unknown camera" };
// Close codes after which reconnecting cannot help (the service restarted with another token, or without
// this camera): the tile stops and the page says what to do instead of retrying every 30 s for ever.
const FINAL_CLOSES = {
  4401: () => "The access token was rejected: the service's token has changed. Open this page as /?token=YOUR_TOKEN.",
  4404: (id) => `Camera "${id}" no longer exists on the service: reload the page to see its cameras.`,
};
// A browser opens at most 6 HTTP/1.1 connections per host, and an endless MJPEG response holds one for
// as long as the page lives: with more cameras than this, tiles poll single snapshots instead, so every
// picture and every other request (the camera list, a reload) still gets a connection.
const MAX_STREAMS = 4;
const SNAPSHOT_INTERVAL_MS = 200;
// An MJPEG response that ends (a proxy's timeout, a network hiccup) fires neither "error" nor a new
// "load" in Chromium: the picture just freezes or goes blank. When the websocket says the camera is live
// again, or live with a blank picture, the stream is asked for anew, at most this often.
const VIDEO_RESTART_MIN_MS = 5000;

/** Delay before reconnect attempt n (0, 1, 2, ...): 1 s, 2 s, 4 s, ... capped at 30 s. */
const backoff = (n) => Math.min(BACKOFF_MIN_MS * 2 ** n, BACKOFF_MAX_MS);

/**
 * An absolute URL for an API path, resolved against the page (so a path prefix added by a reverse proxy
 * is kept) and carrying the page's token: <img> and WebSocket cannot send an Authorization header.
 */
function apiUrl(path, params = {}) {
  const url = new URL(path, document.baseURI);
  for (const [key, value] of Object.entries(params)) url.searchParams.set(key, value);
  if (TOKEN) url.searchParams.set("token", TOKEN);
  return url;
}

function showError(text) {
  const box = document.getElementById("error");
  box.textContent = text || "";
  box.hidden = !text;
}

/** One camera: the video, the overlay, and the websocket that feeds it. */
class Tile {
  constructor(camera, video) {
    this.id = camera.id;
    this.video = video; // "stream" (MJPEG) or "snapshots" (polled JPEGs, for crowded pages)
    this.updates = 0;
    this.wsFailures = 0; // consecutive websocket failures; reset by a message, not by a mere open
    this.videoFailures = 0;
    this.closed = false; // the service said reconnecting cannot help (FINAL_CLOSES)
    this.pipCount = -1;
    this.root = document.getElementById("tile-template").content.firstElementChild.cloneNode(true);
    this.root.dataset.camera = camera.id;
    this.root.dataset.video = video;
    this.el = {};
    for (const node of this.root.querySelectorAll("[data-testid]")) this.el[node.dataset.testid] = node;
    this.pips = this.root.querySelector(".pips");
    this.img = this.root.querySelector("img.video");
    this.img.alt = `camera ${camera.id}`;
    this.img.addEventListener("load", () => {
      this.videoFailures = 0;
      if (this.video === "snapshots") this.videoTimer = setTimeout(() => this.startVideo(true), SNAPSHOT_INTERVAL_MS);
    });
    this.img.addEventListener("error", () => this.retryVideo());
    this.el.name.textContent = camera.id;
    this.setState(camera.state);
  }

  start() {
    this.startVideo(false);
    this.connect();
  }

  startVideo(fresh) {
    clearTimeout(this.videoTimer);
    const file = this.video === "snapshots" ? "snapshot.jpg" : "stream.mjpg";
    const path = `cameras/${encodeURIComponent(this.id)}/${file}`;
    // Re-assigning the same src would not reload the image; a throwaway parameter forces a new request.
    this.img.src = apiUrl(path, fresh ? { _: Date.now() } : {}).href;
    this.videoStartedAt = Date.now();
  }

  /** Called with every message: restart a stream that has probably died (see VIDEO_RESTART_MIN_MS). */
  checkVideo(wasLive, live) {
    if (this.video !== "stream" || !live) return;
    const blank = this.img.complete && this.img.naturalWidth === 0;
    if ((wasLive && !blank) || Date.now() - this.videoStartedAt < VIDEO_RESTART_MIN_MS) return;
    this.startVideo(true);
  }

  retryVideo() {
    clearTimeout(this.videoTimer);
    if (this.closed) return;
    this.videoTimer = setTimeout(() => this.startVideo(true), backoff(this.videoFailures++));
  }

  connect() {
    const url = apiUrl(`ws/cameras/${encodeURIComponent(this.id)}`);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(url.href);
    socket.addEventListener("open", () => {
      // After an outage the MJPEG response most likely died with the server: ask for a new one.
      if (this.wsFailures > 0) this.startVideo(true);
      this.setWs("open", "connected");
    });
    socket.addEventListener("message", (event) => {
      this.wsFailures = 0;
      this.update(JSON.parse(event.data));
    });
    // "error" is always followed by "close", so reconnecting from "close" alone covers both.
    socket.addEventListener("close", (event) => this.reconnect(event));
  }

  reconnect(event) {
    const final = FINAL_CLOSES[event.code];
    if (final) {
      this.closed = true;
      clearTimeout(this.videoTimer);
      this.img.removeAttribute("src"); // the stream would be refused as well
      this.setWs("closed", `closed (${CLOSE_REASONS[event.code]})`);
      this.setState(event.code === 4401 ? "not authorised" : "removed");
      showError(final(this.id));
      return;
    }
    const delay = backoff(this.wsFailures++);
    const why = CLOSE_REASONS[event.code] || `code ${event.code}`;
    this.setWs("reconnecting", `disconnected (${why}); retrying in ${delay / 1000} s`);
    setTimeout(() => this.connect(), delay);
  }

  setWs(state, title) {
    this.root.dataset.ws = state;
    this.el["ws-dot"].title = title;
  }

  setState(state) {
    this.root.dataset.state = state;
    this.el.state.textContent = state;
    this.el.state.hidden = state === "live";
  }

  /** Apply one CameraPrediction message (see service/messages.py). */
  update(msg) {
    this.root.dataset.updates = String(++this.updates);
    const wasLive = this.root.dataset.state === "live";
    this.setState(msg.camera_state);
    this.checkVideo(wasLive, msg.camera_state === "live");
    const known = msg.exit > 0 && msg.label != null;
    const confidence = known ? (msg.confidence ?? 0) : 0;
    const idle = msg.camera_state === "live" ? "waiting for a prediction…" : "no picture";
    this.el.label.textContent = known ? msg.label : idle;
    this.el.label.title = known ? msg.top5.map((t) => `${t.label} ${Math.round(t.confidence * 100)}%`).join("\n") : "";
    this.el.confidence.textContent = known ? `${Math.round(confidence * 100)}%` : "";
    this.el.bar.style.width = `${(confidence * 100).toFixed(1)}%`;
    this.el.bar.style.background = `hsl(${Math.round(confidence * 120)} 70% 48%)`; // red (unsure) to green (sure)
    this.el.exit.textContent = `exit ${known ? msg.exit : "–"}/${msg.exits_total}`;
    this.el.cost.textContent = known ? `${msg.mflops.toFixed(1)} MFLOPs · ${msg.compute_ms.toFixed(1)} ms` : "";
    this.drawPips(known ? msg.exit : 0, msg.exits_total);
  }

  drawPips(exit, total) {
    if (total !== this.pipCount) {
      this.pips.replaceChildren(...Array.from({ length: total }, () => document.createElement("i")));
      this.pipCount = total;
    }
    this.pips.querySelectorAll("i").forEach((pip, i) => pip.classList.toggle("on", i < exit));
  }
}

/** Fetch the camera list (retrying with backoff) and build one tile per camera. */
async function loadCameras(attempt = 0) {
  const summary = document.getElementById("summary");
  try {
    const headers = TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};
    const response = await fetch(new URL("cameras", document.baseURI), { headers, cache: "no-store" });
    if (response.status === 401) {
      // Retrying cannot help: the token is in the page's URL.
      summary.textContent = "not authorised";
      showError("The access token is missing or wrong: open this page as /?token=YOUR_TOKEN.");
      return;
    }
    if (!response.ok) throw new Error(`GET /cameras answered HTTP ${response.status}`);
    const cameras = await response.json();
    showError(null);
    summary.textContent = `${cameras.length} camera${cameras.length === 1 ? "" : "s"}`;
    const grid = document.getElementById("grid");
    const video = cameras.length > MAX_STREAMS ? "snapshots" : "stream";
    for (const camera of cameras) {
      const tile = new Tile(camera, video);
      grid.append(tile.root);
      tile.start();
    }
  } catch (err) {
    const delay = backoff(attempt);
    summary.textContent = "service unreachable";
    showError(`${err.message}; retrying in ${delay / 1000} s`);
    setTimeout(() => loadCameras(attempt + 1), delay);
  }
}

loadCameras();
